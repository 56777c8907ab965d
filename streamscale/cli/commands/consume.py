"""`streamscale consume`: one consumer process, its options made from the consumer settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click
from pydantic import ValidationError

from streamscale.cli.commands.shared import settings_error
from streamscale.consumer.settings import ConsumerSettings
from streamscale.core.errors import ConfigError
from streamscale.core.imports import import_object
from streamscale.core.settings import StreamscaleSettings


def _consume_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One option per consumer setting, from the settings class itself (names, help texts).

    Values stay strings here: the settings class converts and checks them, so a flag and its
    environment variable are refused with the same message.
    """
    fields = ConsumerSettings.model_fields
    shared = StreamscaleSettings.model_fields
    # The consumer's own settings first, then the HTTP and log ones every process has.
    ordered = [name for name in fields if name not in shared] + list(shared)
    for name in reversed(ordered):
        field = fields[name]
        env = "STREAMSCALE_" + name.upper()
        flag = "--" + name.replace("_", "-")
        func = click.option(flag, name, default=None, help=f"{field.description} [env {env}]")(func)
    return func


def check_import(path: str, env: str) -> None:
    """Import `module:attr` now, so a typo is reported before anything starts."""
    import_object(path, env)


@click.command()
@_consume_options
def consume(**options: Any) -> None:
    """Run one consumer process until SIGTERM/SIGINT (same as `python -m streamscale.consumer`).

    Reads the stream through the group in batches, writes each batch to the SQL table (or calls
    the handler), acks only what succeeded, and dead-letters what never can.
    """
    # Like `python -m` and uvicorn: the user's module:attr paths resolve from where they run it.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    overrides = {key: value for key, value in options.items() if value is not None}
    try:
        settings = ConsumerSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(settings_error(exc)) from None
    if settings.handler:
        check_import(settings.handler, "STREAMSCALE_HANDLER")
    if settings.model:
        check_import(settings.model, "STREAMSCALE_MODEL")
    from streamscale.consumer import app  # noqa: PLC0415 -- SQLAlchemy, aiohttp: only to run

    sys.exit(app.run(settings))
