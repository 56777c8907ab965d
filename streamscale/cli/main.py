"""The `streamscale` command: consume, operate, produce, status, dlq, demo.

Every command reads the same `STREAMSCALE_*` environment variables as the consumer and the
operator; options override them. Errors a user can fix (Redis unreachable, a wrong import path,
a malformed option) end with one message saying what to do and a non-zero exit, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson
from pydantic import ValidationError
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from rich.console import Console
from rich.table import Table

from streamscale.cli.common import safe_url
from streamscale.consumer.settings import ConsumerSettings
from streamscale.core.constants import REASONS
from streamscale.core.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    REDIS_RETRYABLE,
    ConfigError,
    StreamscaleError,
    redis_denial,
)
from streamscale.core.imports import import_object
from streamscale.core.settings import DEFAULT_REDIS_URL, ClientSettings, StreamscaleSettings
from streamscale.core.streams import Client, connect
from streamscale.core.tasks import stop_on_signals

T = TypeVar("T")

EXIT_FAILED = 1


def fail(message: str) -> NoReturn:
    """End the command with `Error: message` and exit status 1."""
    raise click.ClickException(message)


def open_redis(url: str) -> Client:
    """A client for `url`, or a clear error when the URL is malformed."""
    try:
        return connect(url)
    except ValueError as exc:
        raise ConfigError(
            f"invalid Redis URL {safe_url(url)!r}: {exc}. Use redis://host:6379/0,"
            " redis+sentinel://host:26379/<master-name>/0 or redis+cluster://host:6379"
        ) from None


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="streamscale")
def cli() -> None:
    """Redis Streams consumers: stream to SQL or to a handler, lag-driven scaling, dead letters."""


# consume ------------------------------------------------------------------------------------


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


def settings_error(exc: ValidationError, what: str = "consumer settings") -> str:
    """A pydantic validation error as `STREAMSCALE_X (--x): problem` lines."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "settings"
        flag = "--" + field.replace("_", "-")
        lines.append(f"  STREAMSCALE_{field.upper()} / {flag}: {error['msg']}")
    return f"invalid {what}:\n" + "\n".join(lines)


@cli.command()
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
    from streamscale.consumer import app  # noqa: PLC0415 -- keeps other commands light

    sys.exit(app.run(settings))


# operate ------------------------------------------------------------------------------------


@cli.command()
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Watch this namespace.")
@click.option("--all-namespaces", "-A", is_flag=True, help="Watch every namespace.")
def operate(namespaces: tuple[str, ...], all_namespaces: bool) -> None:
    """Run the Kubernetes operator (kopf) for StreamConsumer resources."""
    if not namespaces and not all_namespaces:
        raise click.UsageError("name the scope: --namespace NS (repeatable) or --all-namespaces")
    if namespaces and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces exclude each other")
    # Imported here, not at the top: the other commands start faster without kopf.
    running = importlib.import_module("streamscale.operator.running")
    check_kubernetes_login()
    try:
        running.run(list(namespaces), all_namespaces)
    except ValidationError as exc:
        raise ConfigError(settings_error(exc, "operator settings")) from None


def check_kubernetes_login() -> None:
    """Find the operator's Kubernetes credentials now, as kopf would, or stop with what to do.

    Without any, kopf keeps retrying its login in the background and the operator waits
    forever with nothing but a log line.
    """
    import kopf  # noqa: PLC0415 - see `operate`

    handlers = importlib.import_module("streamscale.operator.handlers")
    try:
        found = handlers.default_login(settings=kopf.OperatorSettings(), logger=logging.getLogger())
    except Exception as exc:
        raise ConfigError(
            f"cannot read the Kubernetes credentials: {type(exc).__name__}: {exc}. Fix the"
            " kubeconfig that KUBECONFIG (or ~/.kube/config) names, or run inside the cluster"
        ) from None
    if found is None:
        raise ConfigError(
            "no Kubernetes credentials: neither an in-cluster service account nor a kubeconfig"
            " (KUBECONFIG, ~/.kube/config) was found. Run it inside the cluster, or point"
            " KUBECONFIG at a kubeconfig for the cluster to operate"
        )


# produce ------------------------------------------------------------------------------------


@cli.command()
@redis_option
@stream_option
@click.option("--count", "-c", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option(
    "--mode",
    type=click.Choice(["stream", "bulk"]),
    default="stream",
    show_default=True,
    help="stream: one XADD per round trip; bulk: pipelined XADDs.",
)
@click.option("--pipeline", "pipeline_size", type=click.IntRange(1, 100_000), default=500,
              show_default=True, help="Bulk mode: XADDs per round trip.")  # fmt: skip
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="At most this many entries per second (default: no limit).")  # fmt: skip
@click.option("--template", default=None,
              help="Payload JSON object with {n} {uuid} {now} {rand} placeholders, or @file.json."
              " Default: a product (sku, name, price, url, created_at).")  # fmt: skip
@click.option("--maxlen", type=click.IntRange(min=1), default=None,
              help="Trim the stream to about this many entries (MAXLEN ~).")  # fmt: skip
@click.option("--poison-ratio", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of invalid (non-JSON) messages, for demos and chaos.")  # fmt: skip
@click.option("--seed", type=int, default=None, help="Random seed, for repeatable runs.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
def produce(
    *,
    redis_url: str | None,
    stream: str,
    count: int,
    mode: str,
    pipeline_size: int,
    rate: float | None,
    template: str | None,
    maxlen: int | None,
    poison_ratio: float,
    seed: int | None,
    as_json: bool,
    progress: bool,
) -> None:
    """Add COUNT entries to the stream, the payload as JSON in the `data` field."""
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TimeRemainingColumn,
    )

    from streamscale.cli import producing  # noqa: PLC0415

    try:
        if template is not None and template.startswith("@"):
            try:
                template = Path(template[1:]).read_text()
            except OSError as exc:
                fail(f"cannot read the --template file: {exc}")
        parsed = producing.parse_template(template) if template is not None else None
        generator = producing.Generator(parsed, poison_ratio, seed)
    except producing.TemplateError as exc:
        fail(str(exc))

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not progress,
        transient=False,
    )

    stop = asyncio.Event()

    async def work(redis: Client) -> producing.Summary:
        # Ctrl-C or SIGTERM ends the run after the current round trip and still prints the
        # summary; so does losing Redis.
        with stop_on_signals(stop), bar:
            task = bar.add_task(f"{mode} -> {stream}", total=count)
            return await producing.produce(
                redis,
                stream,
                count,
                generator,
                bulk=mode == "bulk",
                pipeline_size=pipeline_size,
                rate=rate,
                maxlen=maxlen,
                progress=lambda n: bar.advance(task, n),
                stop=stop,
            )

    summary = run_async(redis_url, work)
    if stop.is_set():
        click.echo(f"interrupted after {summary.produced} of {count} entries", err=True)
    if as_json:
        echo_json(summary.as_dict())
    else:
        length = "unknown" if summary.length is None else summary.length
        click.echo(
            f"produced {summary.produced} entries ({summary.poison} poison) to {stream!r}"
            f" in {summary.seconds:.2f}s ({summary.rate:,.0f}/s, {mode} mode);"
            f" stream length {length}; IDs {summary.first_id} .. {summary.last_id}"
        )
    if summary.error is not None:
        fail(f"{summary.error}. Entries after the last ID above were not added; run again for"
             " the rest once Redis is back")  # fmt: skip
    if stop.is_set():
        sys.exit(EXIT_INTERRUPTED)


# status -------------------------------------------------------------------------------------


@cli.command()
@redis_option
@click.option("--stream", "streams", multiple=True, callback=non_empty,
              help="A stream to show (repeatable; default: all, up to 50).")  # fmt: skip
@click.option("--once", is_flag=True, help="Print one snapshot and exit (no live view).")
@click.option("--json", "as_json", is_flag=True, help="With --once: the snapshot as JSON.")
@click.option("--interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between refreshes (with --once: between the two samples that"
              " measure throughput; 0 skips it).")  # fmt: skip
def status(
    redis_url: str | None, streams: tuple[str, ...], once: bool, as_json: bool, interval: float
) -> None:
    """Streams, groups, lag, pending, consumers and dead letters: a live table (Ctrl-C ends)."""
    from rich.live import Live  # noqa: PLC0415

    from streamscale.cli import snapshots  # noqa: PLC0415

    if as_json and not once:
        once = True

    async def names(redis: Client) -> list[str]:
        return list(streams) or await snapshots.discover(redis)

    async def snapshot_once(redis: Client) -> snapshots.Snapshot:
        chosen = await names(redis)
        first = await snapshots.collect(redis, chosen)
        if interval <= 0:
            return first
        await asyncio.sleep(interval)
        return await snapshots.collect(redis, chosen, first)

    if once:
        snap = run_async(redis_url, snapshot_once)
        if as_json:
            echo_json(snap.as_dict())
        elif not snap.streams:
            click.echo("no streams found (name one with --stream)")
        else:
            stdout_console().print(snapshots.table(snap))
        return

    async def live(redis: Client) -> None:
        # Ctrl-C sets a flag: a cancel landing inside a redis-py call may be swallowed.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        previous: snapshots.Snapshot | None = None
        with Live(console=Console(), auto_refresh=False) as view:
            while not stop.is_set():
                chosen = await names(redis)
                previous = await snapshots.collect(redis, chosen, previous)
                view.update(snapshots.table(previous), refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(interval, 0.1))

    run_async(redis_url, live)


# dlq ----------------------------------------------------------------------------------------


@cli.group()
def dlq() -> None:
    """Inspect, replay and purge dead-letter entries (stream `<stream>:dlq`)."""


def dlq_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--dead-letter-stream",
        envvar="STREAMSCALE_DEAD_LETTER_STREAM",
        default=None,
        callback=non_empty,
        help="The dead-letter stream (default <stream>:dlq).",
    )(func)
    return redis_option(stream_option(func))


def reason_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--reason",
        "reasons",
        multiple=True,
        type=click.Choice(list(REASONS)),
        help="Only entries dead-lettered for this reason (repeatable).",
    )(func)


def _dlq_name(stream: str, dead_letter_stream: str | None) -> str:
    from streamscale.cli import replaying  # noqa: PLC0415

    return replaying.dead_letter_name(stream, dead_letter_stream)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@dlq.command("list")
@dlq_options
@reason_option
@click.option("--count", "-c", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def dlq_list(
    *,
    redis_url: str | None,
    stream: str,
    dead_letter_stream: str | None,
    reasons: tuple[str, ...],
    count: int,
    as_json: bool,
) -> None:
    """The oldest dead-letter entries: why, from where, and the start of their data."""
    from streamscale.cli import replaying  # noqa: PLC0415

    name = _dlq_name(stream, dead_letter_stream)

    async def work(redis: Client) -> tuple[list[replaying.DeadEntry], int]:
        return await replaying.entries(redis, name, reasons=reasons, limit=count), int(
            await redis.xlen(name)
        )

    found, total = run_async(redis_url, work)
    if as_json:
        echo_json({"dead_letter_stream": name, "length": total,
                   "entries": [e.as_dict() for e in found]})  # fmt: skip
        return
    if not found:
        filtered = f" with reason {', '.join(reasons)}" if reasons else ""
        click.echo(f"no dead-letter entries{filtered} in {name} ({total} in all)")
        return
    grid = Table(title=f"{name}: {len(found)} shown of {total}", title_justify="left")
    for column in ("id", "reason", "original id", "stream", "consumer", "deliveries", "at",
                   "error", "data"):  # fmt: skip
        grid.add_column(column)
    for e in found:
        data = e.original.get("data", orjson.dumps(e.original).decode())
        grid.add_row(
            e.id, e.reason, e.get("x-original-id"), e.get("x-stream"), e.get("x-consumer"),
            e.get("x-deliveries"), e.get("x-dead-lettered-at"), _short(e.get("x-error"), 50),
            _short(data, 40),
        )  # fmt: skip
    stdout_console().print(grid)


@dlq.command("show")
@dlq_options
@click.argument("entry_id", callback=entry_ids)
@click.option("--json", "as_json", is_flag=True)
def dlq_show(
    redis_url: str | None, stream: str, dead_letter_stream: str | None, entry_id: str, as_json: bool
) -> None:
    """Every field of one dead-letter entry."""
    from streamscale.cli import replaying  # noqa: PLC0415

    name = _dlq_name(stream, dead_letter_stream)
    entry = run_async(redis_url, lambda redis: replaying.get(redis, name, entry_id))
    if entry is None:
        fail(f"no entry {entry_id} in {name} (replayed or purged already? see `dlq list`)")
    if as_json:
        echo_json(entry.as_dict())
        return
    click.echo(f"{name} {entry.id}")
    for key, value in entry.fields.items():
        click.echo(f"  {key}: {value}")


@dlq.command("replay")
@dlq_options
@click.argument("entry_ids", nargs=-1, callback=entry_ids)
@click.option("--all", "replay_all", is_flag=True, help="Every entry (with --reason: matching).")
@reason_option
@click.option("--count", "-c", type=click.IntRange(min=1), default=None,
              help="With --all: at most this many, oldest first.")  # fmt: skip
@click.option("--to", "target", default=None, help="Replay into this stream instead of x-stream.")
@click.option("--json", "as_json", is_flag=True)
def dlq_replay(
    *,
    redis_url: str | None,
    stream: str,
    dead_letter_stream: str | None,
    entry_ids: tuple[str, ...],
    replay_all: bool,
    reasons: tuple[str, ...],
    count: int | None,
    target: str | None,
    as_json: bool,
) -> None:
    """Re-add entries to their source stream, each at most once (atomic; see `dlq` docs).

    The new entry keeps the original fields, without the x-* dead-letter fields, plus
    `x-replayed-from` = the dead-letter entry ID; the dead-letter entry is removed in the same
    step. Exits 1 when a named entry could not be replayed (already replayed, not found).
    """
    from streamscale.cli import replaying  # noqa: PLC0415

    if bool(entry_ids) == replay_all:
        raise click.UsageError("name dead-letter entry IDs, or pass --all (not both)")
    if reasons and not replay_all:
        raise click.UsageError("--reason filters --all; named IDs are replayed as named")
    name = _dlq_name(stream, dead_letter_stream)

    async def work(redis: Client) -> list[replaying.Replayed]:
        ids = list(entry_ids)
        if replay_all:
            ids = [e.id for e in await replaying.entries(redis, name, reasons=reasons, limit=count)]
        return await replaying.replay(redis, name, ids, to=target)

    outcomes = run_async(redis_url, work)
    if as_json:
        echo_json([o.__dict__ for o in outcomes])
    else:
        for o in outcomes:
            if o.status == replaying.STATUS_REPLAYED:
                click.echo(f"{o.id} -> {o.stream} {o.new_id}")
            elif o.status == replaying.STATUS_ALREADY:
                click.echo(f"{o.id}: already replayed as {o.new_id}, not replayed again")
            elif o.status == replaying.STATUS_MISSING:
                click.echo(f"{o.id}: not in {name}")
            elif o.status == replaying.STATUS_EMPTY:
                click.echo(f"{o.id}: no original fields to replay (reason deleted); purge it")
            else:
                click.echo(f"{o.id}: no x-stream field; pass --to STREAM")
        done = sum(1 for o in outcomes if o.status == replaying.STATUS_REPLAYED)
        click.echo(f"replayed {done} of {len(outcomes)} from {name}")
    failed = [
        o
        for o in outcomes
        if o.status != replaying.STATUS_REPLAYED
        and not (replay_all and o.status == replaying.STATUS_EMPTY)
    ]
    if failed:
        sys.exit(EXIT_FAILED)


@dlq.command("purge")
@dlq_options
@click.argument("entry_ids", nargs=-1, callback=entry_ids)
@click.option("--all", "purge_all", is_flag=True, help="Every entry (with --reason: matching).")
@reason_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(
    *,
    redis_url: str | None,
    stream: str,
    dead_letter_stream: str | None,
    entry_ids: tuple[str, ...],
    purge_all: bool,
    reasons: tuple[str, ...],
    yes: bool,
) -> None:
    """Delete dead-letter entries for good (asks first unless --yes)."""
    from streamscale.cli import replaying  # noqa: PLC0415

    if bool(entry_ids) == purge_all:
        raise click.UsageError("name dead-letter entry IDs, or pass --all (not both)")
    if reasons and not purge_all:
        raise click.UsageError("--reason filters --all; named IDs are purged as named")
    name = _dlq_name(stream, dead_letter_stream)

    async def count_them(redis: Client) -> tuple[int, list[str]]:
        if purge_all and not reasons:
            return int(await redis.xlen(name)), []
        if purge_all:
            ids = [e.id for e in await replaying.entries(redis, name, reasons=reasons)]
        else:
            ids = list(entry_ids)
        return len(ids), ids

    n, ids = run_async(redis_url, count_them)
    if n == 0:
        click.echo(f"nothing to purge in {name}")
        return
    what = "every" if purge_all and not reasons else str(n)
    if not yes:
        if not sys.stdin.isatty():
            fail(f"purging {what} entries of {name} needs confirmation: use a terminal or --yes")
        click.confirm(f"Delete {what} dead-letter entries ({n}) from {name} for good?", abort=True)

    async def purge(redis: Client) -> int:
        if purge_all and not reasons:
            return await replaying.purge_all(redis, name)
        return await replaying.purge(redis, name, ids)

    click.echo(f"purged {run_async(redis_url, purge)} entries from {name}")


# demo ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--count", "-c", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Entries in the burst.")  # fmt: skip
@click.option("--poison-ratio", type=click.FloatRange(0, 1), default=0.001, show_default=True)
@click.option("--database-url", default=None,
              help="Store here (default: SQLite in a temporary directory).")  # fmt: skip
@click.option("--max-replicas", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option("--backlog-per-replica", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--mode", type=click.Choice(["backlog", "drainTime"]), default="backlog",
              show_default=True, help="Scale on the backlog, or on a drain time.")  # fmt: skip
@click.option("--target-drain-seconds", type=click.FloatRange(min=1), default=10.0,
              show_default=True, help="drainTime mode: drain the backlog within this.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(min=1), default=None,
              help="Stop after this long (default: once drained and scaled in).")  # fmt: skip
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Produce at this rate (default: one burst, as fast as possible).")  # fmt: skip
@click.option("--live/--no-live", default=None, help="The live status view (default: on a TTY).")
@click.option("--chaos", type=click.FloatRange(min=0.5), default=None, metavar="SECONDS",
              help="SIGKILL a random consumer every SECONDS, to watch recovery.")  # fmt: skip
@click.option("--keep", is_flag=True, help="Keep the temporary directory (Redis dir, SQLite).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(**options: Any) -> None:
    """The whole system on one machine: throwaway Redis, SQLite, producer, scaled consumers.

    Consumers are local `python -m streamscale.consumer` processes scaled by the operator's
    own policy (streamscale.operator.scaling); the operator's mover removes consumers that
    vanished (--chaos kills some) once live ones have claimed their entries, and dead-letters
    entries past max-deliveries. Ctrl-C stops everything and cleans up.
    """
    import streamscale.cli.demo  # noqa: PLC0415

    if options["live"] is None:
        options["live"] = sys.stdout.isatty()
    try:
        code = streamscale.cli.demo.main(streamscale.cli.demo.DemoOptions(**options))
    except streamscale.cli.demo.DemoError as exc:
        fail(str(exc))
    sys.exit(code)


# bench --------------------------------------------------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmarks of a source checkout (bench/run.py, what `make bench` runs)."""
    # streamscale/cli/main.py: the checkout's root is three levels up.
    script = Path(__file__).resolve().parents[2] / "bench" / "run.py"
    if not script.is_file():
        fail(
            "the benchmarks live in the source repository (bench/run.py), not in the installed"
            " package: clone it and run `make bench`"
        )
    os.execv(sys.executable, [sys.executable, str(script), *args])  # noqa: S606


def main() -> None:
    """The console script: a streamscale error ends it with one message, never a traceback."""
    try:
        cli(prog_name="streamscale")
    except StreamscaleError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_FAILED)
