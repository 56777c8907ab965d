"""`streamscale dlq`: inspect, replay and purge dead-letter entries."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
import orjson
from rich.table import Table

from streamscale.cli import replaying
from streamscale.cli.commands.shared import (
    echo_json,
    entry_ids,
    fail,
    non_empty,
    redis_option,
    run_async,
    stdout_console,
    stream_option,
)
from streamscale.core.constants import REASONS
from streamscale.core.errors import EXIT_FAILED
from streamscale.core.streams import Client


@click.group()
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
