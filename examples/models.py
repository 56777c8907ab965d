"""A SQLModel sink model: product rows, as a supermarket price scraper stores them."""

import datetime
from decimal import Decimal

from sqlmodel import Field, SQLModel


class Product(SQLModel, table=True):
    """One scraped product price; `stream_id` makes redelivery idempotent."""

    id: int | None = Field(default=None, primary_key=True)
    stream_id: str = Field(unique=True, index=True)
    sku: str = Field(max_length=64, index=True)
    name: str
    price: Decimal = Field(max_digits=12, decimal_places=2, ge=0)
    url: str
    created_at: datetime.datetime
