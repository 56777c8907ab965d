"""Choosing the sink from the settings."""

from __future__ import annotations

from streamscale.consumer.settings import ConsumerSettings
from streamscale.consumer.sinks.base import Sink
from streamscale.consumer.sinks.models import load_model
from streamscale.consumer.sinks.sql import PostgresSink, SqliteSink, is_postgres
from streamscale.core.errors import ConfigError
from streamscale.core.streams import Client


def build_sink(settings: ConsumerSettings, redis: Client) -> Sink:
    """A handler sink when `handler` is set, else a SQL sink for `database_url`'s kind."""
    if settings.handler:
        from streamscale.consumer.sinks.handler import HandlerSink  # noqa: PLC0415 - optional mode

        return HandlerSink(settings, redis)
    model = load_model(settings.model)
    url = settings.database_url.get_secret_value()
    if is_postgres(url):
        return PostgresSink(
            url, model, settings.streams, settings.pool_size,
            add_missing_columns=settings.add_missing_columns,
            timeout=settings.database_timeout_seconds,
        )  # fmt: skip
    if url.startswith("sqlite"):
        return SqliteSink(
            url, model, settings.streams, add_missing_columns=settings.add_missing_columns
        )
    scheme = url.partition("://")[0]
    raise ConfigError(
        f"STREAMSCALE_DATABASE_URL has scheme {scheme!r}; use postgresql://user@host/db "
        "(asyncpg) or sqlite:///path.db"
    )
