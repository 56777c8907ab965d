"""`streamscale demo`: the whole system on one machine.

A throwaway redis-server (temporary directory, no persistence), SQLite in the same directory
(or `--database-url`), a burst of product messages with a few poison ones, and consumer
processes (`python -m streamscale.consumer`) scaled by the operator's own policy
(`streamscale.operator.scaling`) through a local-process `Actuator`. The operator's dead-letter
mover (`streamscale.operator.reclaiming`) runs too, for consumers that vanished. The run ends
when the burst is drained and the consumers are scaled back to zero (or after `--duration`),
with a summary: produced, stored, dead-lettered, peak replicas, duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streamscale.cli import producing, snapshots
from streamscale.cli.common import safe_url
from streamscale.cli.local import LocalConsumers, LocalError, RedisProcess
from streamscale.core import lag, streams
from streamscale.core.constants import DEAD_LETTER_SUFFIX, EVENTS_TABLE, X_ORIGINAL_ID
from streamscale.core.deadletter import Scripts
from streamscale.core.errors import ConfigError, Interrupted, StreamscaleError
from streamscale.core.tasks import cancel_all, spawn, stop_on_signals
from streamscale.operator import forecasting, scaling

STREAM = "orders"
GROUP = "order-writers"
POLL_SECONDS = 0.5
MOVER_SECONDS = 2.0
STABILIZATION_SECONDS = 3.0
"""Much shorter than the operator's default 60 s, so a demo scales in while you watch."""
CLAIM_IDLE_MS = 3_000
MAX_DELIVERIES = 3
DRAIN_TIMEOUT_SECONDS = 300.0
"""Without --duration, give up (exit 1) if the burst is not drained by then."""
MAX_CRASHES = 3
INTERRUPTED = "interrupted: every child process was stopped"


class DemoError(StreamscaleError):
    """The demo cannot run, or cannot go on; the text says what to do (exit 1)."""


@dataclasses.dataclass
class DemoOptions:
    count: int = 20_000
    poison_ratio: float = 0.001
    database_url: str | None = None
    max_replicas: int = 4
    backlog_per_replica: int = 2_000
    mode: str = "backlog"
    target_drain_seconds: float = 10.0
    duration: float | None = None
    rate: float | None = None
    live: bool = False
    keep: bool = False
    as_json: bool = False
    chaos: float | None = None
    """Every this many seconds, SIGKILL a random consumer process."""


@dataclasses.dataclass
class DemoState:
    """What the live view and the summary show."""

    started: float = dataclasses.field(default_factory=time.monotonic)
    produced: int = 0
    poison: int = 0
    producing_done: bool = False
    backlog: int = 0
    replicas: int = 0
    desired: int = 0
    peak_replicas: int = 0
    scale_events: list[str] = dataclasses.field(default_factory=list)
    reclaimed: int = 0
    removed_consumers: int = 0
    killed: list[str] = dataclasses.field(default_factory=list)
    crashes: int = 0
    snapshot: snapshots.Snapshot | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def stored_ids(database_url: str, stream: str) -> set[str] | None:
    """Entry IDs stored in the built-in table for `stream`; None when the database cannot say."""
    query = f"SELECT stream_id FROM {EVENTS_TABLE} WHERE stream = "  # noqa: S608
    try:
        if database_url.startswith("sqlite"):
            path = database_url.split(":///", 1)[1]
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
                return {row[0] for row in db.execute(query + "?", (stream,))}
        import asyncpg  # noqa: PLC0415

        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return {row[0] for row in await conn.fetch(query + "$1", stream)}
        finally:
            await conn.close()
    except Exception:
        return None


async def all_ids(redis: streams.Client, stream: str, field: bytes | None = None) -> set[str]:
    """Every entry ID of `stream`, or every value of `field` in its entries."""
    found: set[str] = set()
    start = "-"
    while True:
        page = await redis.xrange(stream, min=start, max="+", count=10_000) or []
        for entry_id, fields in page:
            value = entry_id if field is None else (fields or {}).get(field)
            found.add(streams.as_str(value))
        if len(page) < 10_000:
            return found
        start = "(" + streams.as_str(page[-1][0])


async def waiting_ids(redis: streams.Client) -> set[str]:
    """IDs the group has not finished: never delivered, or delivered and still pending."""
    info = await streams.group_info(redis, STREAM, GROUP)
    if info is None:
        return set()
    unread = await redis.xrange(STREAM, min="(" + info.last_delivered_id, max="+") or []
    pending = await streams.pending_entries(redis, STREAM, GROUP, count=max(1, info.pending))
    return {streams.as_str(entry_id) for entry_id, _ in unread} | {p.id for p in pending}


async def backlog_of(
    redis: streams.Client, stream_fields: dict[str, Any] | None = None
) -> tuple[int, streams.GroupInfo | None]:
    """lag + pending of the demo's group (lag read as the operator reads it: `core.lag`)."""
    info = await streams.group_info(redis, STREAM, GROUP)
    if info is None:
        return 0, None
    group_lag = await lag.group_lag(redis, STREAM, info, stream_fields=stream_fields)
    return group_lag.count + info.pending, info


class Demo:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.state = DemoState()
        self.policy = scaling.Policy(
            min_replicas=0,
            max_replicas=options.max_replicas,
            backlog_per_replica=options.backlog_per_replica,
            stabilization_seconds=STABILIZATION_SECONDS,
            mode=options.mode,
            target_drain_seconds=options.target_drain_seconds,
        )
        self.scaling_state = scaling.ScalingState()
        self.rates = forecasting.RateEstimator()
        self.stop = asyncio.Event()
        self.produced = asyncio.Event()
        self.drained = False
        self.interrupted = False
        self.failure: DemoError | None = None
        """Why the run cannot go on, set by a task: the run raises it once everything stopped."""

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM: end the run; its cleanup stops every child in order.

        A flag rather than `task.cancel()`: Python 3.11's `asyncio.wait_for` can swallow a
        cancellation that lands while it is timing out, and a lost Ctrl-C is not acceptable.
        """
        self.interrupted = True
        self.stop.set()

    async def produce(self, redis: streams.Client) -> None:
        generator = producing.Generator(None, self.options.poison_ratio, seed=None)

        def progress(n: int) -> None:
            self.state.produced += n

        summary = await producing.produce(
            redis,
            STREAM,
            self.options.count,
            generator,
            bulk=True,
            pipeline_size=200,
            rate=self.options.rate,
            progress=progress,
            stop=self.stop,
        )
        self.state.poison = summary.poison
        self.state.producing_done = True
        self.produced.set()

    async def scale(self, redis: streams.Client, actuator: LocalConsumers) -> None:
        if self.options.rate is None:
            # One burst: the operator would first see it whole (it lands within a poll), so
            # scaling starts once it is in. Otherwise how far one early consumer got before the
            # second poll, a race with the producer, decided the replicas.
            waiters = [
                spawn(self.stop.wait(), name="scaler: stop"),
                spawn(self.produced.wait(), name="scaler: burst produced"),
            ]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            await cancel_all(waiters)
        while not self.stop.is_set():
            # One XINFO STREAM a poll serves the lag bound and the arrival counter.
            stream_fields = await lag.stream_info(redis, STREAM)
            backlog, info = await backlog_of(redis, stream_fields)
            counters = forecasting.Counters(
                time=time.monotonic(),
                entries_added=lag.entries_added(stream_fields),
                completed=None if info is None else info.completed,
                backlog=backlog,
                replicas=await actuator.get_replicas(),
            )
            rates = self.rates.update(counters)
            decision = await scaling.step(
                actuator,
                self.policy,
                self.scaling_state,
                backlog=backlog,
                now=time.monotonic(),
                rates=rates,
            )
            self.state.backlog = backlog
            self.state.desired = decision.desired
            self.state.replicas = await actuator.get_replicas()
            self.state.peak_replicas = max(self.state.peak_replicas, actuator.peak)
            if decision.direction is not None:
                self.state.scale_events.append(
                    f"{self.state.elapsed():5.1f}s {decision.current} -> {decision.target}:"
                    f" {decision.reason}"
                )
            # A crashed consumer is replaced on the next poll, as Kubernetes restarts a pod;
            # a crash loop ends the demo with the consumers' own last words.
            for crash in actuator.crashed[self.state.crashes :]:
                self.state.scale_events.append(f"{self.state.elapsed():5.1f}s crashed: {crash}")
            self.state.crashes = len(actuator.crashed)
            if self.state.crashes > MAX_CRASHES:
                # An outcome, not a crash of this task: reported once, by `run`.
                self.failure = DemoError(
                    "consumer processes keep failing: " + "; ".join(actuator.crashed)
                )
                self.stop.set()
                return
            if (
                self.options.duration is None
                and self.state.producing_done
                and backlog == 0
                and self.state.replicas == 0
                and not actuator.alive_names()
            ):
                self.drained = True
                self.stop.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), POLL_SECONDS)

    async def reclaim(self, redis: streams.Client, actuator: LocalConsumers) -> None:
        """The operator's dead-letter mover, with the local processes standing in for pods."""
        try:
            from streamscale.operator import reclaiming  # noqa: PLC0415
        except ImportError as exc:
            self.state.scale_events.append(f"dead-letter mover unavailable: {exc}")
            return
        scripts = Scripts(redis)
        rules = reclaiming.Rules(max_deliveries=MAX_DELIVERIES, idle_ms=60_000)
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), MOVER_SECONDS)
            if await streams.group_info(redis, STREAM, GROUP) is None:
                continue
            # The design's rule: a vanished consumer's entries are claimed by the live ones
            # (the retry path) and dead-lettered only on maxDeliveries or idleSeconds; the
            # consumer itself is deleted once its pending list is empty.
            consumers = await streams.consumer_infos(redis, STREAM, GROUP)
            gone = reclaiming.gone_consumers(consumers, actuator.alive_names())
            result = await reclaiming.move_stranded(
                scripts, STREAM, GROUP, STREAM + DEAD_LETTER_SUFFIX,
                gone=set(), rules=rules, max_pages=50,
            )  # fmt: skip
            result.removed = await reclaiming.remove_gone(scripts, STREAM, GROUP, gone)
            self.state.reclaimed += result.total
            self.state.removed_consumers += len(result.removed)

    async def chaos(self, actuator: LocalConsumers, every: float) -> None:
        """Kill a random consumer now and then: the claim path and the mover take over."""
        rng = random.Random()
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), every)
            if self.stop.is_set() or (self.state.producing_done and self.state.backlog == 0):
                continue
            victim = actuator.kill_one(rng)
            if victim is not None:
                self.state.killed.append(victim)
                self.state.scale_events.append(f"{self.state.elapsed():5.1f}s killed {victim}")

    async def watch(self, redis: streams.Client) -> None:
        while not self.stop.is_set():
            self.state.snapshot = await snapshots.collect(redis, [STREAM], self.state.snapshot)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)

    def view(self) -> Group:
        state = self.state
        facts = Table.grid(padding=(0, 2))
        facts.add_row(
            f"elapsed {state.elapsed():.1f}s",
            f"produced {state.produced}/{self.options.count}",
            f"backlog {state.backlog}",
            f"replicas {state.replicas} (desired {state.desired}, peak {state.peak_replicas})",
            f"reclaimed {state.reclaimed}",
            f"killed {len(state.killed)}",
        )
        parts: list[Any] = [facts]
        if state.snapshot is not None:
            parts.append(snapshots.table(state.snapshot, title=None))
        parts.extend(f"[dim]{line}[/dim]" for line in state.scale_events[-5:])
        return Group(*parts)

    async def run(self, redis_url: str, database_url: str, log_dir: Path) -> dict[str, Any]:
        redis = streams.connect(redis_url)
        env = {
            "STREAMSCALE_REDIS_URL": redis_url,
            "STREAMSCALE_DATABASE_URL": database_url,
            "STREAMSCALE_STREAM": STREAM,
            "STREAMSCALE_GROUP": GROUP,
            "STREAMSCALE_CONCURRENCY": "1",
            "STREAMSCALE_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
            # Claim a killed consumer's entries before the mover would dead-letter them.
            "STREAMSCALE_CLAIM_INTERVAL_MS": "1000",
            "STREAMSCALE_MAX_DELIVERIES": str(MAX_DELIVERIES),
            "STREAMSCALE_SHUTDOWN_GRACE_SECONDS": "10",
            "STREAMSCALE_LOG_FORMAT": "console",
        }
        actuator = LocalConsumers(env, log_dir)
        tasks: list[asyncio.Task[Any]] = []
        try:
            await streams.ensure_group(redis, STREAM, GROUP, "0")
            tasks = [
                spawn(self.produce(redis), name="producer"),
                spawn(self.scale(redis, actuator), name="scaler"),
                spawn(self.reclaim(redis, actuator), name="mover"),
                spawn(self.watch(redis), name="status"),
            ]
            if self.options.chaos:
                tasks.append(spawn(self.chaos(actuator, self.options.chaos), name="chaos"))
            deadline = self.options.duration or DRAIN_TIMEOUT_SECONDS
            live = (
                Live(self.view(), console=self.console, refresh_per_second=4)
                if self.options.live
                else contextlib.nullcontext()
            )
            with live as view:
                end = time.monotonic() + deadline
                while not self.stop.is_set() and time.monotonic() < end:
                    for task in tasks:
                        if task.done() and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                    if view is not None:
                        view.update(self.view())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), 0.25)
                self.stop.set()
                if view is not None:
                    view.update(self.view())
            if self.failure is not None:
                raise self.failure
        finally:
            self.stop.set()
            await cancel_all(tasks)
            await asyncio.to_thread(actuator.stop_all)
            self.state.peak_replicas = max(self.state.peak_replicas, actuator.peak)
        try:
            dead_lettered = int(await redis.xlen(STREAM + DEAD_LETTER_SUFFIX))
            backlog, _ = await backlog_of(redis)
            produced_ids = await all_ids(redis, STREAM)
            dead_ids = await all_ids(redis, STREAM + DEAD_LETTER_SUFFIX, X_ORIGINAL_ID.encode())
            waiting = await waiting_ids(redis)
        finally:
            await redis.aclose()
        stored = await stored_ids(database_url, STREAM)
        if stored is not None:
            # A --database-url may hold rows of earlier runs; only this run's entries count.
            stored &= produced_ids
        # Not lost: stored, dead-lettered, or still waiting (a --duration run stops early).
        lost = None if stored is None else len(produced_ids - stored - dead_ids - waiting)
        both = None if stored is None else len(stored & dead_ids)
        return {
            "produced": self.state.produced,
            "poison": self.state.poison,
            "stored": None if stored is None else len(stored),
            "lost": lost,
            "stored_and_dead_lettered": both,
            "dead_lettered": dead_lettered,
            "backlog_left": backlog,
            "peak_replicas": self.state.peak_replicas,
            "consumer_processes_started": actuator.started,
            "scale_events": self.state.scale_events,
            "reclaimed_by_mover": self.state.reclaimed,
            "gone_consumers_removed": self.state.removed_consumers,
            "killed": self.state.killed,
            "crashed": actuator.crashed,
            "duration_seconds": round(self.state.elapsed(), 2),
            "drained": self.drained,
            "interrupted": self.interrupted,
            "database_url": safe_url(database_url),
        }


def _or_unknown(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def render_summary(summary: dict[str, Any], console: Console) -> None:
    grid = Table(title="streamscale demo", title_justify="left", show_header=False)
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    stored = summary["stored"]
    rows = [
        ("produced", f"{summary['produced']} ({summary['poison']} poison)"),
        ("stored", "unknown" if stored is None else str(stored)),
        ("dead-lettered", str(summary["dead_lettered"])),
        ("lost (neither stored nor dead-lettered)", _or_unknown(summary["lost"])),
        ("stored and also dead-lettered", _or_unknown(summary["stored_and_dead_lettered"])),
        ("left in the stream", str(summary["backlog_left"])),
        ("peak replicas", str(summary["peak_replicas"])),
        ("consumer processes started", str(summary["consumer_processes_started"])),
        ("killed (--chaos)", str(len(summary["killed"]))),
        ("dead-lettered by the mover", str(summary["reclaimed_by_mover"])),
        ("gone consumers removed", str(summary["gone_consumers_removed"])),
        ("duration", f"{summary['duration_seconds']:.1f}s"),
        ("drained", "yes" if summary["drained"] else "no"),
    ]
    for row in rows:
        grid.add_row(*row)
    console.print(grid)
    for line in summary["scale_events"]:
        console.print(f"  scale {line}")


async def check_database(database_url: str) -> None:
    """Connect once before anything starts: consumers would otherwise retry a database that can
    never work (wrong scheme, host, password) until the run times out."""
    if database_url.startswith("sqlite"):
        return
    if not database_url.startswith(("postgresql://", "postgresql+asyncpg://")):
        raise ConfigError(
            f"--database-url {safe_url(database_url)}: the demo stores into PostgreSQL"
            " (postgresql://user:password@host:5432/db) or SQLite (sqlite:///path)"
        )
    import asyncpg  # noqa: PLC0415 - only for a PostgreSQL demo

    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError, ValueError) as exc:
        raise ConfigError(
            f"--database-url {safe_url(database_url)} cannot be used: {type(exc).__name__}:"
            f" {exc}. Nothing was started; check the host, port, database and password"
        ) from None
    await conn.close()


async def _main(options: DemoOptions, workdir: Path, console: Console) -> dict[str, Any]:
    redis_server = RedisProcess(workdir)
    redis_server.start()
    try:
        database_url = options.database_url or f"sqlite:///{workdir / 'demo.db'}"
        await check_database(database_url)
        if not options.live and not options.as_json:
            console.print(
                f"redis {redis_server.url}, database {safe_url(database_url)}, logs in {workdir}",
                highlight=False,
                soft_wrap=True,
            )
        demo = Demo(options, console)
        with stop_on_signals(demo.interrupt):
            return await demo.run(redis_server.url, database_url, workdir)
    finally:
        redis_server.stop()


def main(options: DemoOptions) -> int:
    """Run the demo; the exit code (0: everything produced was stored or dead-lettered).

    Raises `Interrupted` when Ctrl-C or SIGTERM ended it (after every child stopped) and
    `DemoError` when it cannot run.
    """
    console = Console(stderr=options.as_json)
    workdir = Path(tempfile.mkdtemp(prefix="streamscale-demo-"))
    try:
        try:
            summary = asyncio.run(_main(options, workdir, console))
        except (KeyboardInterrupt, asyncio.CancelledError):
            raise Interrupted(INTERRUPTED) from None
        except LocalError as exc:
            raise DemoError(str(exc)) from None
        except DemoError:
            options.keep = True  # the consumer logs in it say what went wrong
            raise
        if options.as_json:
            print(json.dumps(summary, indent=2))
        else:
            render_summary(summary, console)
        if summary["interrupted"]:
            raise Interrupted(INTERRUPTED)
        accounted = summary["lost"] == 0
        if options.duration is None and not (summary["drained"] and accounted):
            console.print(
                "[red]the demo did not account for every message (see the consumer logs in"
                f" {workdir}, kept)[/red]"
            )
            options.keep = True
            return 1
        return 0
    finally:
        if options.keep:
            console.print(f"kept {workdir}", highlight=False)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
