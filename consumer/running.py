"""The consumer's work loop: read the group, decode, sink, ack or dead-letter, claim the stranded.

Structure (one process):
- one reader task per consumer name: its own pending entries first (ID 0), then new ones (`>`);
- one claimer task: XAUTOCLAIM of entries idle on other consumers (the retry path);
- every batch goes through `Processor.process`: decode, write to the sink (retrying transient
  failures with backoff while renewing its lease on the entries), then dead-letter the rejected
  ones atomically with their ack and ack the rest.
Shutdown: `stop()` makes readers stop reading; in-flight batches finish until `deadline()`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import exceptions as redis_errors

from streamscale.consumer.messages import decode_all, split_deleted
from streamscale.consumer.metrics import ConsumerMetrics
from streamscale.consumer.settings import ConsumerSettings
from streamscale.consumer.sinks.base import Sink, SinkResult
from streamscale.core import constants as c
from streamscale.core.backoff import Backoff, Health
from streamscale.core.deadletter import DeadLetter, MoveResult, Scripts
from streamscale.core.errors import ConfigError, TransientError
from streamscale.core.streams import (
    Client,
    Entry,
    ensure_group,
    group_info,
    is_nogroup,
    is_unblocked_by_failover,
    now_millis,
    parse_entries,
    pending_entries,
)
from streamscale.core.tasks import spawn

logger = logging.getLogger(__name__)

T = TypeVar("T")

REDIS_TRANSIENT = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    OSError,
    # core.errors.REDIS_CLUSTER_RETRYABLE, spelled out so that `except` can extend the tuple.
    redis_errors.ClusterDownError,
    redis_errors.RedisClusterException,
)
"""Redis errors worth retrying: the server is away, restarting or loading, or a cluster fails
over."""


LAST_ERRORS_KEPT = 100_000
"""How many pending entries' last errors a process remembers (about 20 MB at most)."""


class GaveUp(Exception):
    """The shutdown deadline passed while a batch was still retrying; it stays pending."""


class Processor:
    """Processes batches of entries for any of this process's consumer names."""

    def __init__(
        self,
        settings: ConsumerSettings,
        redis: Client,
        sink: Sink,
        metrics: ConsumerMetrics,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.sink = sink
        self.metrics = metrics
        self.scripts = Scripts(redis)
        self.sink_health = Health("database" if not settings.handler else "handler", logger)
        self.redis_health = Health("Redis", logger)
        self.group_missing = ""
        """Why consuming is stopped because the group was destroyed, or empty while it is not."""
        self.stopping = asyncio.Event()
        self.expired = asyncio.Event()
        """Set at the shutdown deadline: stop retrying, leave what is unfinished pending."""
        self.last_errors: collections.OrderedDict[str, str] = collections.OrderedDict()
        """The last error of entries left pending for redelivery, oldest first (bounded)."""
        self.entry_bytes = settings.max_message_bytes
        """The size to plan reads with: the largest entry of the last read (at first the cap)."""
        self.broken: ConfigError | None = None
        """Why the sink cannot work any more (a column dropped under us): the process exits 2."""

    def read_count(self) -> int:
        """How many entries one read may take: `batch_size`, fewer when entries are large.

        XREADGROUP and XAUTOCLAIM bound a read by count only; 300 entries of 0.9 MB in one
        batch took a consumer to 856 MB. Planning with the largest recent entry keeps a batch
        within `batch_max_bytes`, except once when entries suddenly grow much larger.
        """
        budget = self.settings.batch_max_bytes // max(self.entry_bytes, 1)
        return max(1, min(self.settings.batch_size, budget))

    def observe(self, entries: list[Entry]) -> None:
        """Remember the largest entry of a read, for the next `read_count`."""
        if entries:
            self.entry_bytes = max(
                sum(len(k) + len(v) for k, v in fields.items()) if fields else 0
                for _id, fields in entries
            )

    def sink_broken(self, error: ConfigError) -> None:
        """Stop consuming for good: no retry can fix the sink, the entries stay pending."""
        if self.broken is None:
            self.broken = error
        self.stopping.set()

    def group_destroyed(self) -> None:
        """Consuming stops: say so once, in the log, the metric and `/readyz`."""
        if self.group_missing:
            return
        s = self.settings
        self.group_missing = (
            f"group {s.group!r} is missing on stream {s.stream!r}, which still has entries "
            "(XGROUP DESTROY?); not recreating it, that would replay the whole stream"
        )
        self.metrics.group_missing.set(1)
        logger.error(
            "%s. Consuming is stopped. Recreate the group where it should continue "
            "(XGROUP CREATE %s %s <last-delivered-id>), or empty the stream, and it resumes.",
            self.group_missing, s.stream, s.group,
        )  # fmt: skip

    def group_is_back(self) -> None:
        if self.group_missing:
            self.group_missing = ""
            self.metrics.group_missing.set(0)
            logger.info("group %r is back on stream %r; consuming again", self.settings.group,
                        self.settings.stream)  # fmt: skip

    async def process(self, consumer: str, entries: list[Entry]) -> None:
        """Take one batch from read to ack; raises GaveUp at the shutdown deadline."""
        started = time.perf_counter()
        live, deleted = split_deleted(entries)
        messages = decode_all(live, self.settings.max_message_bytes)
        dead = [DeadLetter(m.id, c.REASON_INVALID, m.error) for m in messages if m.error]
        dead += [
            DeadLetter(i, c.REASON_DELETED, "entry deleted from the stream while pending")
            for i in deleted
        ]
        good = [m for m in messages if m.error is None]
        self.metrics.inflight_messages.inc(len(entries))
        # Only live entries: XCLAIM of an entry deleted from the stream drops it from the
        # pending list, and its `deleted` record would then never be written.
        lease = spawn(self._renew_lease(consumer, [i for i, _ in live]), "lease")
        try:
            result = await self._write(good) if good else SinkResult()
            dead += [DeadLetter(i, c.REASON_INVALID, err) for i, err in result.rejected.items()]
            rejected = {d.id for d in dead}
            done = [m for m in good if m.id not in rejected and m.id not in result.retry]
            self._remember_errors(result.errors, [*rejected, *(m.id for m in done)])
            moved = await self.retrying(lambda: self._finish(done, dead), "ack")
        finally:
            lease.cancel()
            self.metrics.inflight_messages.dec(len(entries))
        now_ms = now_millis()
        for m in done:
            self.metrics.end_to_end_seconds.observe(max(0, now_ms - m.produced_ms) / 1000)
        self.metrics.stored.inc(len(done))
        self.metrics.dead_lettered.inc(moved.dead_lettered)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def process_redelivered(self, consumer: str, entries: list[Entry]) -> None:
        """Process entries delivered before, dead-lettering those delivered too often.

        Both claimed entries and a restarted consumer's own pending entries count: a message
        that crashes the process would otherwise come back after every restart, for ever.
        """
        s = self.settings
        counts = {
            e.id: e.deliveries
            for e in await pending_entries(
                self.redis, s.stream, s.group, count=len(entries) + 2 * s.batch_size,
                start=entries[0][0], end=entries[-1][0], consumer=consumer,
            )
        }  # fmt: skip
        exhausted = [e for e in entries if counts.get(e[0], 0) > s.max_deliveries]
        if exhausted:
            error = f"delivered more than {s.max_deliveries} times without being acked"
            result = await self.scripts.dead_letter(
                s.stream, s.dead_letter, s.group,
                [DeadLetter(e[0], c.REASON_MAX_DELIVERIES, self._last_error(e[0], error))
                 for e in exhausted],
            )  # fmt: skip
            self.metrics.dead_lettered.inc(result.dead_lettered)
        retry = [e for e in entries if counts.get(e[0], 0) <= s.max_deliveries]
        if retry:
            await self.process(consumer, retry)

    def _remember_errors(self, errors: dict[str, str], settled: list[str]) -> None:
        """Keep why entries failed until they are acked or dead-lettered.

        Only this process knows, so an entry that exhausts its deliveries here shows its real
        error; one finally dead-lettered by another pod shows the count alone.
        """
        for entry_id in settled:
            self.last_errors.pop(entry_id, None)
        for entry_id, error in errors.items():
            self.last_errors[entry_id] = error
            self.last_errors.move_to_end(entry_id)
        while len(self.last_errors) > LAST_ERRORS_KEPT:
            self.last_errors.popitem(last=False)

    def _last_error(self, entry_id: str, error: str) -> str:
        last = self.last_errors.pop(entry_id, None)
        return f"{error}; last error: {last}" if last else error

    async def _write(self, messages: list[Any]) -> SinkResult:
        async def attempt() -> SinkResult:
            started = time.perf_counter()
            try:
                result = await self.sink.write(messages)
            except TransientError:
                self.metrics.retried.inc(len(messages))
                raise
            self.metrics.sink_seconds.observe(time.perf_counter() - started)
            return result

        return await self.retrying(
            attempt, f"{len(messages)} messages wait",
            errors=(TransientError,), health=self.sink_health, backoff=Backoff(base=0.2, cap=10),
        )  # fmt: skip

    async def _finish(self, done: list[Any], dead: list[DeadLetter]) -> MoveResult:
        stream, group = self.settings.stream, self.settings.group
        moved = MoveResult()
        if dead:
            moved = await self.scripts.dead_letter(stream, self.settings.dead_letter, group, dead)
        if done:
            await self.redis.xack(stream, group, *[m.id for m in done])
        return moved

    async def retrying(
        self,
        call: Callable[[], Awaitable[T]],
        what: str,
        *,
        errors: tuple[type[BaseException], ...] = REDIS_TRANSIENT,
        health: Health | None = None,
        backoff: Backoff | None = None,
    ) -> T:
        """Run `call` until it succeeds, backing off while it fails with one of `errors`
        (by default: Redis is away). Raises GaveUp once the shutdown deadline has passed."""
        health = health or self.redis_health
        backoff = backoff or Backoff(base=0.1, cap=5.0)
        while True:
            try:
                value = await call()
            except errors as exc:
                health.failed(exc, what)
                if self.expired.is_set():
                    raise GaveUp from exc
                await backoff.sleep(self.expired)
                continue
            health.recovered()
            return value

    async def _renew_lease(self, consumer: str, ids: list[str]) -> None:
        """Keep in-flight entries from looking idle while a slow batch is retried.

        Without this, other consumers would XAUTOCLAIM them after `claim_idle_ms` (raising their
        delivery count towards `max_deliveries`) and the operator would dead-letter them as idle,
        although nothing is wrong with the messages: only the database is away.
        """
        # Well inside both the claim idle time and the operator's minimum move idle time (5 s).
        interval = max(0.05, min(self.settings.claim_idle_ms / 3000, 2.0))
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(*REDIS_TRANSIENT, redis_errors.ResponseError):
                await self.scripts.touch(self.settings.stream, self.settings.group, consumer, ids)


class Reader:
    """One consumer name's loop: pending entries first, then new ones."""

    def __init__(self, processor: Processor, consumer: str) -> None:
        self.p = processor
        self.consumer = consumer
        self.settings = processor.settings

    async def run(self) -> None:
        backoff = Backoff(base=0.1, cap=10.0)
        cursor: str | None = "0"  # own pending entries first; None once they are done
        while not self.p.stopping.is_set():
            try:
                entries = await self._read(cursor)
                self.p.redis_health.recovered()
                self.p.group_is_back()
                backoff.reset()
                if cursor is not None:
                    if not entries:
                        cursor = None
                        continue
                    cursor = entries[-1][0]
                if cursor is not None:
                    await self.p.process_redelivered(self.consumer, entries)
                elif entries:
                    await self.p.process(self.consumer, entries)
            except GaveUp:
                return
            except ConfigError as exc:
                self.p.sink_broken(exc)
                return
            except REDIS_TRANSIENT as exc:  # first: ReadOnlyError and TryAgainError are
                self.p.redis_health.failed(exc, "reading")  # ResponseErrors too (failover)
                await backoff.sleep(self.p.stopping)
                cursor = "0"  # what was delivered but not acked is ours to finish
            except redis_errors.ResponseError as exc:
                if is_unblocked_by_failover(exc):  # transient, like a lost connection
                    self.p.redis_health.failed(exc, "reading")
                    await backoff.sleep(self.p.stopping)
                    cursor = "0"
                    continue
                if not is_nogroup(exc):
                    raise
                await self._recreate_group(backoff)
                cursor = "0"

    async def _read(self, cursor: str | None) -> list[Entry]:
        s = self.settings
        raw: Any
        count = self.p.read_count()
        if cursor is None:
            raw = await self.p.redis.xreadgroup(
                s.group, self.consumer, {s.stream: ">"}, count=count, block=s.block_ms
            )
        else:
            raw = await self.p.redis.xreadgroup(
                s.group, self.consumer, {s.stream: cursor}, count=count
            )
        if not raw:
            return []
        _stream, entries = raw[0]
        parsed = parse_entries(entries)
        self.p.observe(parsed)
        return parsed

    async def _recreate_group(self, backoff: Backoff) -> None:
        """The group (or the whole stream) is gone, e.g. Redis restarted empty: recreate it.

        Only when the stream is gone or empty too. A group destroyed (`XGROUP DESTROY`) on a
        stream that still has entries would be recreated at the start ID and replay the whole
        stream, through handlers too: consuming stops instead, until someone recreates the group
        where it should be or empties the stream.
        """
        s = self.settings
        try:
            if await self.p.redis.xlen(s.stream) > 0:
                if await group_info(self.p.redis, s.stream, s.group) is not None:
                    # Still there: the key moved, not deleted (a Redis Cluster slot migration
                    # ends blocked reads with "UNBLOCKED the stream key no longer exists").
                    return
                self.p.group_destroyed()
                await backoff.sleep(self.p.stopping)
                return
            created = await ensure_group(self.p.redis, s.stream, s.group, s.group_start_id)
        except REDIS_TRANSIENT as exc:
            self.p.redis_health.failed(exc, "recreating the group")
            created = False
        if created:
            logger.warning(
                "group %r on stream %r was missing (Redis restarted empty?); recreated it at %s",
                s.group, s.stream, s.group_start_id,
            )  # fmt: skip
        await backoff.sleep(self.p.stopping)


class Claimer:
    """The retry path: claims entries idle on other consumers, dead-letters the exhausted."""

    def __init__(self, processor: Processor, consumer: str) -> None:
        self.p = processor
        self.consumer = consumer
        self.settings = processor.settings
        self.deleted_total = 0
        """Entries XAUTOCLAIM reported as deleted from the stream while pending."""

    async def run(self) -> None:
        interval = self.settings.claim_interval_ms / 1000
        while not self.p.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.p.stopping.wait(), interval)
            if self.p.stopping.is_set():
                return
            if not self.p.sink_health.ok:
                continue  # claiming now would only raise delivery counts towards dead-lettering
            try:
                await self.sweep()
            except GaveUp:
                return
            except ConfigError as exc:
                self.p.sink_broken(exc)
                return
            except REDIS_TRANSIENT as exc:  # before ResponseError, as in Reader.run
                self.p.redis_health.failed(exc, "claiming")
            except redis_errors.ResponseError as exc:
                if not is_nogroup(exc):
                    raise

    async def sweep(self, max_pages: int = 20) -> int:
        """One pass of XAUTOCLAIM over the pending list; returns how many entries it took."""
        s = self.settings
        cursor, taken = "0-0", 0
        for _ in range(max_pages):
            if self.p.stopping.is_set():
                break  # claiming now would only raise delivery counts and strand entries
            raw: Any = await self.p.redis.xautoclaim(
                s.stream, s.group, self.consumer, s.claim_idle_ms, cursor,
                count=self.p.read_count(),
            )  # fmt: skip
            cursor = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
            entries = parse_entries(raw[1])
            self.p.observe(entries)
            deleted = [i.decode() if isinstance(i, bytes) else str(i) for i in raw[2]]
            if deleted:
                # Redis already dropped these from the pending list; record them, or they vanish.
                self.deleted_total += len(deleted)
                # XAUTOCLAIM has already dropped them: retry the record, or it is lost for good.
                record = functools.partial(
                    self.p.scripts.record_deleted,
                    s.stream, s.dead_letter, s.group, self.consumer, deleted,
                )  # fmt: skip
                await self.p.retrying(record, "recording deleted entries")
                self.p.metrics.dead_lettered.inc(len(deleted))
            if entries:
                taken += len(entries)
                self.p.metrics.retried.inc(len(entries))
                await self.p.process_redelivered(self.consumer, entries)
            if cursor == "0-0":
                break
        return taken


async def leave_group(processor: Processor, consumers: list[str]) -> None:
    """Delete our consumers from the group, each only if nothing is pending on it."""
    s = processor.settings
    for consumer in consumers:
        try:
            pending = await processor.scripts.leave(s.stream, s.group, consumer)
        except (*REDIS_TRANSIENT, redis_errors.ResponseError) as exc:
            logger.warning("could not leave the group as %s: %s", consumer, exc)
            continue
        if pending > 0:
            logger.warning(
                "consumer %s keeps %d pending entries in group %r; another consumer or the "
                "operator will claim them",
                consumer, pending, s.group,
            )  # fmt: skip
