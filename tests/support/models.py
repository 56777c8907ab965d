"""Sink models the tests use (imported by consumer subprocesses as `tests.support.models:...`)."""

import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel


class Product(SQLModel, table=True):
    __tablename__ = "products"

    id: int | None = Field(default=None, primary_key=True)
    stream_id: str = Field(unique=True, index=True)
    sku: str = Field(max_length=64)
    name: str
    price: Decimal = Field(max_digits=12, decimal_places=2)
    url: str
    created_at: datetime.datetime


class CheckedProduct(SQLModel, table=True):
    """Constraints only the database knows: a row can fail on its own inside a good batch."""

    __tablename__ = "checked_products"
    __table_args__ = (
        sa.CheckConstraint("price >= 0", name="price_not_negative"),
        sa.CheckConstraint("name <> 'forbidden'", name="name_allowed"),
    )

    stream_id: str = Field(primary_key=True)
    sku: str
    name: str
    price: Decimal
    created_at: datetime.datetime


class NoIdentity(SQLModel, table=True):
    """Lacks `stream_id`: the consumer must refuse it."""

    __tablename__ = "no_identity"

    id: int | None = Field(default=None, primary_key=True)
    sku: str


class ShortCode(SQLModel, table=True):
    """A length only the database knows: too long must be rejected, never truncated."""

    __tablename__ = "short_codes"

    stream_id: str = Field(primary_key=True)
    code: str = Field(sa_column=sa.Column(sa.String(8), nullable=False))


class StreamProduct(SQLModel, table=True):
    """Identity (stream, stream_id): several streams may feed it, their entry IDs repeating."""

    __tablename__ = "stream_products"

    stream: str = Field(primary_key=True)
    stream_id: str = Field(primary_key=True)
    sku: str = Field(max_length=64)
    name: str
    price: Decimal = Field(max_digits=12, decimal_places=2)
    url: str
    created_at: datetime.datetime


class Reading(SQLModel, table=True):
    """A column of each kind an older table can have the wrong type for (issue 10)."""

    __tablename__ = "readings"

    stream_id: str = Field(primary_key=True)
    sensor: str = Field(max_length=32)
    count: int
    value: Decimal = Field(max_digits=10, decimal_places=3)
    measured_at: datetime.datetime = Field(
        sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )
    labels: dict[str, Any] = Field(sa_column=sa.Column(postgresql.JSONB, nullable=False))
