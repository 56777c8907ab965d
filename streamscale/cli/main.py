"""The `streamscale` command: consume, operate, produce, status, dlq, demo, bench.

Every command reads the same `STREAMSCALE_*` environment variables as the consumer and the
operator; options override them. Errors a user can fix (Redis unreachable, a wrong import path,
a malformed option) end with one message saying what to do and a non-zero exit, not a traceback.

This module is the click group and nothing else: each command lives in its own module under
`streamscale.cli.commands`, imported only when the command runs or `--help` lists it, so
`streamscale produce` never loads kopf, aiohttp or SQLAlchemy. `CommandGroup.invoke` is the one
place a `StreamscaleError` becomes a message and an exit code.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

from streamscale.core.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    ConfigError,
    Interrupted,
    StreamscaleError,
)

COMMANDS: Mapping[str, str] = {
    name: f"streamscale.cli.commands.{name}"
    for name in ("bench", "consume", "demo", "dlq", "operate", "produce", "status")
}
"""Each command's module; the module defines the command under the same name."""


def exit_code(error: StreamscaleError) -> int:
    """2 for a setting to change, 130 for a run a signal ended, 1 for everything else."""
    if isinstance(error, ConfigError):
        return EXIT_CONFIG
    if isinstance(error, Interrupted):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def report(error: StreamscaleError) -> None:
    """One message on stderr: `Error: ...`, or just what happened when a signal ended the run."""
    text = str(error) if isinstance(error, Interrupted) else f"Error: {error}"
    click.echo(text, err=True)


class CommandGroup(click.Group):
    """The group over `COMMANDS`: imports a command's module only when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module = importlib.import_module(COMMANDS[cmd_name])
            self.add_command(getattr(module, cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # A Ctrl-C no command turned into a stop of its own (they do, where stopping
            # early has something to report): the shell's 130, not click's "Aborted!" and 1.
            error: StreamscaleError = Interrupted("interrupted")
        except StreamscaleError as exc:
            error = exc
        report(error)
        ctx.exit(exit_code(error))


@click.group(
    cls=CommandGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="streamscale")
def cli() -> None:
    """Redis Streams consumers: stream to SQL or to a handler, lag-driven scaling, dead letters."""


def main() -> None:
    """The console script."""
    cli(prog_name="streamscale")
