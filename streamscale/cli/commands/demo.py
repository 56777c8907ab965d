"""`streamscale demo`: the whole system on one machine."""

from __future__ import annotations

import sys
from typing import Any

import click


@click.command()
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
    # The demo runs the operator's policy and mover: imported only to run, not for `--help`.
    import streamscale.cli.demo  # noqa: PLC0415

    if options["live"] is None:
        options["live"] = sys.stdout.isatty()
    sys.exit(streamscale.cli.demo.main(streamscale.cli.demo.DemoOptions(**options)))
