"""`streamscale bench`: the benchmarks of a source checkout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from streamscale.cli.commands.shared import fail


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmarks of a source checkout (bench/run.py, what `make bench` runs)."""
    # streamscale/cli/commands/bench.py: the checkout's root is four levels up.
    script = Path(__file__).resolve().parents[3] / "bench" / "run.py"
    if not script.is_file():
        fail(
            "the benchmarks live in the source repository (bench/run.py), not in the installed"
            " package: clone it and run `make bench`"
        )
    os.execv(sys.executable, [sys.executable, str(script), *args])  # noqa: S606
