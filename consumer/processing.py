"""Processing one batch from read to ack: decode, sink, then ack or dead-letter atomically.

Readers (`reading`) and the claimer (`claiming`) hand every batch to `Processor.process`: decode,
write to the sink (retrying transient failures with backoff while renewing its lease on the
entries), then dead-letter the rejected ones atomically with their ack and ack the rest. A retry
gives up (`GaveUp`) once the shared `Shutdown` is past its deadline; the batch stays pending.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import exceptions as redis_errors

from streamscale.consumer.messages import decode_all, split_deleted
from streamscale.consumer.metrics import ConsumerMetrics, StreamMetrics
from streamscale.consumer.settings import ConsumerSettings
from streamscale.consumer.shutdown import Shutdown
from streamscale.consumer.sinks.base import Sink, SinkResult
from streamscale.core import constants as c
from streamscale.core.backoff import Backoff, Health
from streamscale.core.deadletter import DeadLetter, MoveResult, Scripts
from streamscale.core.errors import (
    REDIS_DENIED,
    REDIS_RETRYABLE,
    REDIS_WRONG_KIND,
    ConfigError,
    TransientError,
    redis_denial,
    redis_wrong_kind,
)
from streamscale.core.streams import (
    Client,
    Entry,
    id_millis,
    now_millis,
    pending_entries,
)
from streamscale.core.tasks import spawn

logger = logging.getLogger(__name__)

T = TypeVar("T")


REDIS_ERRORS: tuple[type[BaseException], ...] = (
    *REDIS_DENIED,
    *REDIS_WRONG_KIND,
    *REDIS_RETRYABLE,
)
"""What a loop catches from Redis, before ResponseError (READONLY, TRYAGAIN, NOPERM and MOVED
are ResponseErrors too): `refusal` then tells a refusal (stop) from an outage (retry)."""


def refusal(error: BaseException) -> ConfigError | None:
    """The config error for Redis refusing our credentials or an ACL behind `error` (itself, or
    wrapped by a Cluster client), or for a URL of another kind than the server (a Cluster node
    redirecting a plain client), None for any other error.

    After a good start (password rotated, ACL changed, a slot moved to another node) retrying
    cannot help, so the process exits 2, like at start-up, and its restart reads the new
    settings.
    """
    if (wrong := redis_wrong_kind(error)) is not None:
        return ConfigError(
            f"STREAMSCALE_REDIS_URL does not fit the server: {wrong}. Consuming stopped; what "
            "was read and not acked stays pending for the other consumers."
        )
    denied = redis_denial(error)
    if denied is None:
        return None
    return ConfigError(
        f"Redis refused the credentials in STREAMSCALE_REDIS_URL (or their ACL): "
        f"{type(denied).__name__}: {denied}. Consuming stopped; what was read and not acked stays "
        "pending for the other consumers. Fix the user, password or ACL and start again."
    )


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
        shutdown: Shutdown | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.sink = sink
        self.metrics = metrics
        self.scripts = Scripts(redis)
        self.sink_health = Health("database" if not settings.handler else "handler", logger)
        self.redis_health = Health("Redis", logger)
        self.group_missing: dict[str, str] = {}
        """Streams whose group was destroyed while they still have entries, and why each is
        not consumed (consuming them stays stopped until the group is back)."""
        self.shutdown = shutdown or Shutdown()
        self.last_errors: collections.OrderedDict[str, str] = collections.OrderedDict()
        """The last error of entries left pending for redelivery, oldest first (bounded)."""
        self.entry_bytes = settings.max_message_bytes
        """The size to plan reads with: the largest entry of the last read (at first the cap)."""

    def read_count(self, streams: int = 1) -> int:
        """How many entries one read may take of each of `streams` streams: `batch_size`, fewer
        when entries are large.

        XREADGROUP and XAUTOCLAIM bound a read by count only (per stream); 300 entries of 0.9 MB
        in one batch took a consumer to 856 MB. Planning with the largest recent entry keeps a
        read within `batch_max_bytes`, except once when entries suddenly grow much larger.
        """
        budget = self.settings.batch_max_bytes // max(self.entry_bytes * streams, 1)
        return max(1, min(self.settings.batch_size, budget))

    @property
    def not_consuming(self) -> str:
        """Why some stream is not consumed (its group is missing), for `/readyz`; or ""."""
        return "; ".join(self.group_missing.values())

    def group_destroyed(self, stream: str) -> None:
        """Consuming `stream` stops: say so once, in the log, the metric and `/readyz`."""
        if stream in self.group_missing:
            return
        group = self.settings.group
        self.group_missing[stream] = (
            f"group {group!r} is missing on stream {stream!r}, which still has entries "
            "(XGROUP DESTROY?); not recreating it, that would replay the whole stream"
        )
        self.metrics.of(stream).group_missing.set(1)
        logger.error(
            "%s. Consuming is stopped for this stream (any other streams go on). Recreate the "
            "group where it should continue (XGROUP CREATE %s %s <last-delivered-id>), or empty "
            "the stream, and it resumes.",
            self.group_missing[stream], stream, group,
        )  # fmt: skip

    def group_is_back(self, stream: str) -> None:
        if self.group_missing.pop(stream, None) is not None:
            self.metrics.of(stream).group_missing.set(0)
            logger.info("group %r is back on stream %r; consuming it again", self.settings.group,
                        stream)  # fmt: skip

    async def process(
        self, consumer: str, stream: str, entries: list[Entry], *, redelivered: bool = False
    ) -> None:
        """Take one batch of `stream` from read to ack; raises GaveUp at the shutdown deadline."""
        started = time.perf_counter()
        metrics = self.metrics.of(stream)
        live, deleted = split_deleted(entries)
        messages = decode_all(live, self.settings.max_message_bytes, stream)
        if redelivered:
            for message in messages:
                message.redelivered = True
        if messages:  # the largest entry of this read plans the next one (`read_count`)
            self.entry_bytes = max(m.size for m in messages)
        dead = [DeadLetter(m.id, c.REASON_INVALID, m.error) for m in messages if m.error]
        if deleted:
            dead += [
                DeadLetter(i, c.REASON_DELETED, "entry deleted from the stream while pending")
                for i in deleted
            ]
        good = [m for m in messages if m.error is None] if dead else messages
        metrics.inflight_messages.inc(len(entries))
        # Only live entries: XCLAIM of an entry deleted from the stream drops it from the
        # pending list, and its `deleted` record would then never be written.
        lease = spawn(self._renew_lease(stream, consumer, [i for i, _ in live]), "lease")
        try:
            result = await self._write(good, metrics) if good else SinkResult()
            dead += [DeadLetter(i, c.REASON_INVALID, err) for i, err in result.rejected.items()]
            rejected = {d.id for d in dead}
            if rejected or result.retry:
                done = [m for m in good if m.id not in rejected and m.id not in result.retry]
            else:
                done = good
            if self.last_errors or result.errors:
                self._remember_errors(result.errors, [*rejected, *(m.id for m in done)])
            moved = await self.retrying(lambda: self._finish(stream, done, dead), "ack")
        finally:
            # Wait until the lease is really over: a renewal still under way (a connection being
            # made) would otherwise land after the batch, e.g. after a shutdown's hand-back.
            lease.cancel()
            await asyncio.wait([lease], timeout=1.0)
            metrics.inflight_messages.dec(len(entries))
        metrics.end_to_end_seconds.observe_elapsed(now_millis(), [id_millis(m.id) for m in done])
        metrics.stored.inc(len(done))
        metrics.dead_lettered.inc(moved.dead_lettered)
        metrics.batch_seconds.observe(time.perf_counter() - started)

    async def process_redelivered(self, consumer: str, stream: str, entries: list[Entry]) -> None:
        """Process entries delivered before, dead-lettering those delivered too often.

        Both claimed entries and a restarted consumer's own pending entries count: a message
        that crashes the process would otherwise come back after every restart, for ever.
        """
        s = self.settings
        counts = {
            e.id: e.deliveries
            for e in await pending_entries(
                self.redis, stream, s.group, count=len(entries) + 2 * s.batch_size,
                start=entries[0][0], end=entries[-1][0], consumer=consumer,
            )
        }  # fmt: skip
        exhausted = [e for e in entries if counts.get(e[0], 0) > s.max_deliveries]
        if exhausted:
            error = f"delivered more than {s.max_deliveries} times without being acked"
            result = await self.scripts.dead_letter(
                stream, s.dead_letter_for(stream), s.group,
                [DeadLetter(e[0], c.REASON_MAX_DELIVERIES, self._last_error(e[0], error))
                 for e in exhausted],
            )  # fmt: skip
            self.metrics.of(stream).dead_lettered.inc(result.dead_lettered)
        retry = [e for e in entries if counts.get(e[0], 0) <= s.max_deliveries]
        if retry:
            await self.process(consumer, stream, retry, redelivered=True)

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

    async def _write(self, messages: list[Any], metrics: StreamMetrics) -> SinkResult:
        async def attempt() -> SinkResult:
            started = time.perf_counter()
            try:
                result = await self.sink.write(messages)
            except TransientError:
                metrics.retried.inc(len(messages))
                raise
            metrics.sink_seconds.observe(time.perf_counter() - started)
            return result

        return await self.retrying(
            attempt, f"{len(messages)} messages wait",
            errors=(TransientError,), health=self.sink_health, backoff=Backoff(base=0.2, cap=10),
        )  # fmt: skip

    async def _finish(self, stream: str, done: list[Any], dead: list[DeadLetter]) -> MoveResult:
        group = self.settings.group
        moved = MoveResult()
        if dead:
            dead_letter = self.settings.dead_letter_for(stream)
            moved = await self.scripts.dead_letter(stream, dead_letter, group, dead)
        if done:
            await self.redis.xack(stream, group, *[m.id for m in done])
        return moved

    def redis_failed(self, exc: BaseException, what: str) -> bool:
        """A Redis error in a loop: False to back off and retry (Redis is away), True when it
        refused our credentials or an ACL, or is not the kind of Redis the URL names, which
        stops the process for good (exit 2)."""
        refused = refusal(exc)
        if refused is not None:
            self.shutdown.fail(refused)
            return True
        self.redis_health.failed(exc, what)
        return False

    async def retrying(
        self,
        call: Callable[[], Awaitable[T]],
        what: str,
        *,
        errors: tuple[type[BaseException], ...] = REDIS_RETRYABLE,
        health: Health | None = None,
        backoff: Backoff | None = None,
    ) -> T:
        """Run `call` until it succeeds, backing off while it fails with one of `errors`
        (by default: Redis is away). Raises GaveUp once the shutdown deadline has passed."""
        health = health or self.redis_health
        backoff = backoff or Backoff(base=0.1, cap=5.0)
        caught: tuple[type[BaseException], ...] = (*REDIS_DENIED, *errors)
        while True:
            try:
                value = await call()
            except caught as exc:
                if (refused := refusal(exc)) is not None:
                    raise refused from exc
                health.failed(exc, what)
                if self.shutdown.expired.is_set():
                    raise GaveUp from exc
                await backoff.sleep(self.shutdown.expired)
                continue
            health.recovered()
            return value

    async def _renew_lease(self, stream: str, consumer: str, ids: list[str]) -> None:
        """Keep in-flight entries from looking idle while a slow batch is retried.

        Without this, other consumers would XAUTOCLAIM them after `claim_idle_ms` (raising their
        delivery count towards `max_deliveries`) and the operator would dead-letter them as idle,
        although nothing is wrong with the messages: only the database is away.
        """
        # Well inside both the claim idle time and the operator's minimum move idle time (5 s).
        interval = max(0.05, min(self.settings.claim_idle_ms / 3000, 2.0))
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(*REDIS_RETRYABLE, redis_errors.ResponseError):
                await self.scripts.touch(stream, self.settings.group, consumer, ids)
