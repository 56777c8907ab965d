"""`streamscale status`: streams, groups, lag, pending, consumers and dead letters."""

from __future__ import annotations

import asyncio
import contextlib

import click
from rich.console import Console
from rich.live import Live

from streamscale.cli import snapshots
from streamscale.cli.commands.shared import (
    echo_json,
    non_empty,
    redis_option,
    run_async,
    stdout_console,
)
from streamscale.core.streams import Client
from streamscale.core.tasks import stop_on_signals


@click.command()
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
        previous: snapshots.Snapshot | None = None
        with stop_on_signals(stop), Live(console=Console(), auto_refresh=False) as view:
            while not stop.is_set():
                chosen = await names(redis)
                previous = await snapshots.collect(redis, chosen, previous)
                view.update(snapshots.table(previous), refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(interval, 0.1))

    run_async(redis_url, live)
