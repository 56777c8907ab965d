"""`streamscale produce`: add entries to a stream, one XADD at a time or pipelined."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TimeRemainingColumn,
)

from streamscale.cli import producing
from streamscale.cli.commands.shared import (
    echo_json,
    fail,
    redis_option,
    run_async,
    stream_option,
)
from streamscale.core.errors import Interrupted
from streamscale.core.streams import Client
from streamscale.core.tasks import stop_on_signals


@click.command()
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
@click.option("--shards", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="STREAM is sharded into {STREAM:0}..{STREAM:N-1}: each entry goes to the "
                   "shard of its partition key (crc32 mod N).")  # fmt: skip
@click.option("--key-field", default=None,
              help="With --shards: the payload field holding the partition key "
                   "(default: the message number).")  # fmt: skip
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
    shards: int,
    key_field: str | None,
    as_json: bool,
    progress: bool,
) -> None:
    """Add COUNT entries to the stream, the payload as JSON in the `data` field."""
    try:
        if template is not None and template.startswith("@"):
            try:
                template = Path(template[1:]).read_text()
            except OSError as exc:
                fail(f"cannot read the --template file: {exc}")
        parsed = producing.parse_template(template) if template is not None else None
        generator = producing.Generator(parsed, poison_ratio, seed, key_field)
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
                shards=shards,
            )

    summary = run_async(redis_url, work)
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
        raise Interrupted(f"interrupted after {summary.produced} of {count} entries")
