"""Sink models: the built-in `stream_events` table, and loading a user's SQLModel class."""

from __future__ import annotations

import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from streamscale.consumer.constants import STREAM_ID_COLUMN
from streamscale.core.constants import EVENTS_TABLE
from streamscale.core.errors import ConfigError
from streamscale.core.imports import import_object


class StreamEvent(SQLModel, table=True):
    """The built-in sink table: one row per entry, unique on (stream, stream_id)."""

    __tablename__ = EVENTS_TABLE

    stream: str = Field(primary_key=True)
    stream_id: str = Field(primary_key=True)
    payload: dict[str, Any] = Field(
        sa_column=sa.Column(sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False)
    )
    produced_at: datetime.datetime = Field(
        sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )
    stored_at: datetime.datetime | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def load_model(path: str | None) -> type[SQLModel]:
    """The sink's table class: `path` (`module:Class`), or the built-in StreamEvent."""
    if path is None:
        return StreamEvent
    model = import_object(path, "STREAMSCALE_MODEL")
    if not (isinstance(model, type) and issubclass(model, SQLModel)):
        raise ConfigError(f"STREAMSCALE_MODEL {path!r} is not a SQLModel class")
    table = getattr(model, "__table__", None)
    if not isinstance(table, sa.Table):
        raise ConfigError(
            f"STREAMSCALE_MODEL {path!r} is not a table: declare it with "
            f"`class {model.__name__}(SQLModel, table=True):`"
        )
    check_identity(model, table)
    return model


STREAM_COLUMN = "stream"
"""With `stream_id`, the identity of a row in a table that several streams feed."""


def _unique_on(table: sa.Table, names: set[str]) -> bool:
    """True when the primary key, a unique constraint or a unique index is exactly `names`."""
    if set(table.primary_key.columns.keys()) == names:
        return True
    if names == {STREAM_ID_COLUMN} and any(
        col.unique for col in table.columns if col.name == STREAM_ID_COLUMN
    ):
        return True
    return any(
        isinstance(cons, sa.UniqueConstraint) and set(cons.columns.keys()) == names
        for cons in table.constraints
    ) or any(idx.unique and set(idx.columns.keys()) == names for idx in table.indexes)


def check_identity(model: type[SQLModel], table: sa.Table) -> None:
    """Refuse a model that cannot make writes idempotent on the entry ID."""
    if not (
        _unique_on(table, {STREAM_ID_COLUMN})
        or _unique_on(table, {STREAM_COLUMN, STREAM_ID_COLUMN})
    ):
        raise ConfigError(
            f"model {model.__module__}.{model.__name__} has no unique `{STREAM_ID_COLUMN}` "
            "column, so a redelivered message would make a second row. Add this line to the "
            f"class:\n    {STREAM_ID_COLUMN}: str = Field(unique=True, index=True)\n"
            f"(or `{STREAM_ID_COLUMN}: str = Field(primary_key=True)`); streamscale fills it with "
            "the stream entry ID."
        )


def check_streams(model: type[SQLModel], table: sa.Table, streams: list[str]) -> None:
    """Refuse several streams into a table whose identity is the entry ID alone."""
    if len(streams) > 1 and shares_identity(table):
        raise ConfigError(
            f"streams {', '.join(streams)} would all write into table {table.name!r}, whose "
            f"identity is `{STREAM_ID_COLUMN}` alone: entry IDs repeat across streams, so rows "
            f"would be dropped as duplicates. Make (`{STREAM_COLUMN}`, `{STREAM_ID_COLUMN}`) the "
            f"identity of {model.__name__}:\n"
            f"    {STREAM_COLUMN}: str = Field(primary_key=True)\n"
            f"    {STREAM_ID_COLUMN}: str = Field(primary_key=True)\n"
            "(streamscale fills both), or run one StreamConsumer per stream, each with its own "
            "model."
        )


OWNERS_TABLE = "streamscale_table_streams"
"""Which stream feeds each table whose identity is `stream_id` alone (one row per table)."""

owners = sa.Table(
    OWNERS_TABLE,
    sa.MetaData(),
    sa.Column("table_name", sa.Text, primary_key=True),
    sa.Column("stream", sa.Text, nullable=False),
)


def shares_identity(table: sa.Table) -> bool:
    """True when the table's identity is the entry ID alone, so only one stream may feed it.

    Entry IDs are per stream: two streams produce the same IDs, and the second stream's rows
    would be absorbed as redeliveries of the first's.
    """
    return conflict_columns(table) == [STREAM_ID_COLUMN]


def check_owner(table_name: str, stream: str, owner: str) -> None:
    """Refuse to feed a table that another stream already feeds (its rows would be dropped)."""
    if owner != stream:
        release = f"DELETE FROM {OWNERS_TABLE} WHERE table_name = '{table_name}'"  # noqa: S608 -- for a person to run
        raise ConfigError(
            f"table {table_name!r} is already fed by stream {owner!r}; stream {stream!r} would "
            f"write into it too, and every entry whose ID the other stream already used would be "
            "dropped as a duplicate. Give this stream a model of its own (another "
            f"`__tablename__`), or, to hand the table over to this stream for good, run `{release}`"
            " first."
        )


def conflict_columns(table: sa.Table) -> list[str]:
    """The columns `ON CONFLICT` targets: the entry's identity."""
    if not _unique_on(table, {STREAM_ID_COLUMN}) and _unique_on(
        table, {STREAM_COLUMN, STREAM_ID_COLUMN}
    ):
        return [STREAM_COLUMN, STREAM_ID_COLUMN]
    return [STREAM_ID_COLUMN]
