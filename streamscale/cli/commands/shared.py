"""What the command modules share: a Redis client whose failures read as user errors, the
common options and output helpers."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click
import orjson
from pydantic import ValidationError
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from rich.console import Console

from streamscale.cli.common import safe_url
from streamscale.core.errors import (
    REDIS_RETRYABLE,
    ConfigError,
    StreamscaleError,
    redis_denial,
    redis_wrong_kind,
)
from streamscale.core.settings import DEFAULT_REDIS_URL, ClientSettings
from streamscale.core.streams import Client, connect

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """End the command with `Error: message` and exit status 1 (see `streamscale.cli.main`)."""
    raise StreamscaleError(message)


def open_redis(url: str) -> Client:
    """A client for `url`, or a clear error when the URL is malformed."""
    try:
        return connect(url)
    except ValueError as exc:
        raise ConfigError(
            f"invalid Redis URL {safe_url(url)!r}: {exc}. Use redis://host:6379/0,"
            " redis+sentinel://host:26379/<master-name>/0 or redis+cluster://host:6379"
        ) from None


def refuse_wrong_kind(url: str, exc: BaseException) -> None:
    """A config error when `exc` says the URL names another kind of Redis than the server."""
    if (wrong := redis_wrong_kind(exc)) is not None:
        message = f"the Redis URL {safe_url(url)} does not fit the server: {wrong}"
        raise ConfigError(message) from None


def run_async(url: str | None, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run `work(redis)` on a fresh client, translating Redis failures into user errors.

    `url` is `--redis-url`; without it the URL comes from the settings sources the consumer
    reads too (STREAMSCALE_REDIS_URL, then $STREAMSCALE_SECRETS_DIR/streamscale_redis_url).
    """
    url = redis_url_setting(url)

    async def main() -> T:
        redis = open_redis(url)
        try:
            await redis.ping()  # fail on an unreachable Redis before any output
            return await work(redis)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(main())
    except AuthenticationError as exc:
        fail(f"Redis at {safe_url(url)} refused the credentials: {exc}. Check the URL's password")
    except REDIS_RETRYABLE as exc:
        refuse_wrong_kind(url, exc)
        denied = redis_denial(exc)  # a Redis Cluster client wraps the refusal
        if denied is not None:
            fail(
                f"Redis at {safe_url(url)} refused the credentials: {denied}."
                " Check the URL's user, password and ACL"
            )
        fail(
            f"cannot reach Redis at {safe_url(url)}: {str(exc).rstrip('.')}."
            " Is redis-server running there?"
            " Pass --redis-url or set STREAMSCALE_REDIS_URL"
        )
    except ResponseError as exc:
        refuse_wrong_kind(url, exc)  # MOVED, or a command only Redis or only Sentinel knows
        # Pipelines wrap the answer ("Command # 1 (XADD ...) of pipeline caused error: ...").
        text = str(exc)
        if "WRONGTYPE" in text:
            fail(
                f"a key named here is not a stream: {text}. Nothing was changed;"
                " name a stream with --stream (or --dead-letter-stream)"
            )
        if "DB index is out of range" in text:
            raise ConfigError(
                f"the Redis URL {safe_url(url)} names a database this server does not have:"
                f" {text}. Use a smaller /<db> in the URL (0 is always there)"
            ) from None
        fail(f"Redis at {safe_url(url)} refused the command: {text}")
    except RedisError as exc:
        fail(
            f"the server at {safe_url(url)} did not answer like Redis ({type(exc).__name__}:"
            f" {exc}). Check the host and port of the Redis URL"
        )


def redis_url_setting(url: str | None) -> str:
    """The checked Redis URL: `url` if given, else the one the settings sources hold."""
    try:
        settings = ClientSettings() if url is None else ClientSettings(redis_url=url)
    except ValidationError as exc:
        raise ConfigError(settings_error(exc, "Redis settings")) from None
    return settings.redis_url.get_secret_value()


def settings_error(exc: ValidationError, what: str = "consumer settings") -> str:
    """A pydantic validation error as `STREAMSCALE_X (--x): problem` lines."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "settings"
        flag = "--" + field.replace("_", "-")
        lines.append(f"  STREAMSCALE_{field.upper()} / {flag}: {error['msg']}")
    return f"invalid {what}:\n" + "\n".join(lines)


def redis_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--redis-url",
        default=None,
        help=f"Redis URL. Default: env STREAMSCALE_REDIS_URL, else the file streamscale_redis_url"
        f" in $STREAMSCALE_SECRETS_DIR, else {DEFAULT_REDIS_URL}.",
    )(func)


def non_empty(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse an empty key name: Redis accepts it, and it is never the stream anyone meant."""
    values = value if isinstance(value, tuple) else (value,)
    if any(v == "" for v in values):
        raise click.BadParameter("must not be empty: name the stream", param=param)
    return value


ENTRY_ID = re.compile(r"\d+(-\d+)?")


def entry_ids(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Check entry IDs before Redis sees them, so a typo is a usage error naming the argument."""
    for entry_id in value if isinstance(value, tuple) else (value,):
        if not ENTRY_ID.fullmatch(entry_id):
            raise click.BadParameter(
                f"{entry_id!r} is not a stream entry ID: write it as <milliseconds>-<sequence>,"
                " e.g. 1700000000000-0, as `dlq list` shows them",
                param=param,
            )
    return value


def stream_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--stream",
        envvar="STREAMSCALE_STREAM",
        default="events",
        show_default=True,
        help="The stream (env STREAMSCALE_STREAM).",
        callback=non_empty,
    )(func)


def echo_json(doc: Any) -> None:
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


def stdout_console() -> Console:
    """Rich output on stdout; wide when it is not a terminal, so pipes and tests get whole rows."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=200, soft_wrap=False)
