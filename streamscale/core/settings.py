"""The settings every streamscale process shares: sources, safety and the common fields.

The consumer, the operator and the CLI commands all read `STREAMSCALE_*` variables and the
files of `$STREAMSCALE_SECRETS_DIR` (one file per setting, e.g. a mounted Secret with
`redis_url`), so one value configures all of them the same way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamscale.core import redis_urls
from streamscale.core.errors import ConfigError

SECRETS_DIR_ENV = "STREAMSCALE_SECRETS_DIR"
REDIS_URL_HELP = "Redis URL: redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://."
REDIS_SCHEMES = redis_urls.SCHEMES


def secrets_dir() -> Path | None:
    """`$STREAMSCALE_SECRETS_DIR`, checked: a directory that was named but is missing is fatal.

    pydantic-settings only warns about a missing secrets directory and then ignores it, so a
    mistyped mount path would run with default credentials (or none) instead of stopping.
    """
    configured = os.environ.get(SECRETS_DIR_ENV)
    if not configured:
        return None
    path = Path(configured)
    if not path.is_dir():
        raise ConfigError(
            f"{SECRETS_DIR_ENV}={configured!r} is not a directory, so no setting can be read"
            " from it; mount the Secret there, fix the path, or unset the variable"
        )
    return path


def check_url(value: str, setting: str) -> None:
    """Refuse a URL whose port is not a number, without quoting any part of it.

    An unescaped `/`, `?` or `#` in a password ends the host part early, so the clients would
    report the start of the password as a bad port (`invalid literal for int(): 'se'`) in a
    traceback; base64 passwords often contain `/`.
    """
    try:
        urlsplit(value).port  # noqa: B018 - parsing is the check
    except ValueError:
        raise ValueError(
            f"{setting} is not a valid URL: the text after the host is not a port number;"
            " percent-encode '/', '?', '#', '@' and ':' in the user name and password"
            " (e.g. '/' as '%2F')"
        ) from None


def check_redis_url(value: str) -> None:
    """A Redis URL the client can use: a known scheme and numeric ports.

    Sentinel and Cluster URLs (several hosts) are parsed whole, as `connect` will parse them.
    """
    if redis_urls.scheme_of(value) not in REDIS_SCHEMES:
        raise ValueError(f"not a Redis URL: {redis_urls.EXAMPLES}")
    if redis_urls.is_multi_host(value):
        try:
            redis_urls.parse(value)
        except ValueError as exc:
            raise ValueError(f"the Redis URL is not valid: {exc}") from None
        return
    check_url(value, "the Redis URL")


class StreamscaleSettings(BaseSettings):
    """The base of every process's settings: `STREAMSCALE_*` variables, then secret files.

    Validation errors name the setting and the problem, never the value: values hold passwords.
    """

    model_config = SettingsConfigDict(
        env_prefix="STREAMSCALE_",
        extra="ignore",
        hide_input_in_errors=True,
    )

    http_port: int = Field(8080, ge=0, le=65535, description="/metrics, /healthz, /readyz port.")
    http_host: str = Field("0.0.0.0", description="Address the HTTP port binds to.")  # noqa: S104
    log_format: str = Field("console", pattern="^(json|console)$", description="json | console.")
    log_level: str = Field("INFO", description="Python logging level.")

    def __init__(self, **values: Any) -> None:
        # Read per instance, not at import: tests and the CLI set the variable after importing.
        super().__init__(_secrets_dir=secrets_dir(), **values)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if not isinstance(logging.getLevelNamesMapping().get(level), int):
            raise ValueError("not a log level: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("redis_url", check_fields=False)
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_redis_url(value.get_secret_value())
        return value


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ClientSettings(StreamscaleSettings):
    """What the CLI's Redis commands (`status`, `produce`, `dlq`) read from the environment.

    The same sources as the consumer's, so a shell with the consumer's environment (or its
    mounted secrets) reaches the same Redis.
    """

    redis_url: SecretStr = Field(SecretStr(DEFAULT_REDIS_URL), description=REDIS_URL_HELP)
