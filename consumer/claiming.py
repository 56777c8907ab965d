"""Claiming: the retry path (XAUTOCLAIM of entries idle on other consumers) and leaving the group.

The claimer runs under its own consumer name (`<name>-0`), takes entries idle longer than
`claim_idle_ms`, dead-letters those delivered too often and processes the rest. Entries that
XAUTOCLAIM reports as deleted from the stream are recorded in the dead-letter stream, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

from redis import exceptions as redis_errors

from streamscale.consumer.processing import REDIS_ERRORS, GaveUp, Processor
from streamscale.core.errors import REDIS_RETRYABLE, ConfigError
from streamscale.core.streams import as_str, is_nogroup, parse_entries, pending_entries

logger = logging.getLogger(__name__)


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
        while not self.p.shutdown.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.p.shutdown.stopping.wait(), interval)
            if self.p.shutdown.stopping.is_set():
                return
            if not self.p.sink_health.ok:
                continue  # claiming now would only raise delivery counts towards dead-lettering
            try:
                await self.sweep()
            except GaveUp:
                return
            except ConfigError as exc:
                self.p.shutdown.fail(exc)
                return
            except REDIS_ERRORS as exc:  # before ResponseError, as in Reader.run
                if self.p.redis_failed(exc, "claiming"):
                    return
            except redis_errors.ResponseError as exc:
                if not is_nogroup(exc):
                    raise

    async def sweep(self, max_pages: int = 20) -> int:
        """One pass of XAUTOCLAIM over every stream's pending list; how many entries it took."""
        taken = 0
        for stream in self.settings.streams:
            if self.p.shutdown.stopping.is_set():
                break  # claiming now would only raise delivery counts and strand entries
            try:
                taken += await self._sweep(stream, max_pages)
            except redis_errors.ResponseError as exc:
                if not is_nogroup(exc):
                    raise  # NOGROUP: the readers recreate the group (or report it missing)
        return taken

    async def _sweep(self, stream: str, max_pages: int) -> int:
        s = self.settings
        metrics = self.p.metrics.of(stream)
        cursor, taken = "0-0", 0
        for _ in range(max_pages):
            if self.p.shutdown.stopping.is_set():
                break
            raw: Any = await self.p.redis.xautoclaim(
                stream, s.group, self.consumer, s.claim_idle_ms, cursor,
                count=self.p.read_count(),
            )  # fmt: skip
            cursor = as_str(raw[0])
            entries = parse_entries(raw[1])
            deleted = [as_str(i) for i in raw[2]]
            if deleted:
                # XAUTOCLAIM already dropped these from the pending list: the record is retried
                # until it is written, or they vanish for good.
                self.deleted_total += len(deleted)
                record = functools.partial(
                    self.p.scripts.record_deleted,
                    stream, s.dead_letter_for(stream), s.group, self.consumer, deleted,
                )  # fmt: skip
                await self.p.retrying(record, "recording deleted entries")
                metrics.dead_lettered.inc(len(deleted))
            if entries:
                taken += len(entries)
                metrics.retried.inc(len(entries))
                await self.p.process_redelivered(self.consumer, stream, entries)
            if cursor == "0-0":
                break
        return taken


LEAVE_ERRORS: tuple[type[BaseException], ...] = (*REDIS_RETRYABLE, redis_errors.ResponseError)
"""On the way out, any Redis failure is logged and the next consumer name is tried."""

HAND_BACK_PAGE = 1000
HAND_BACK_PAGES = 100
"""At most this many pages of pending entries are handed back on the way out."""


async def leave_group(processor: Processor, consumers: list[str]) -> None:
    """On the way out: hand back what is still pending on our consumers, then leave the group.

    A consumer is deleted from the group only if nothing is pending on it (XGROUP DELCONSUMER
    would drop its entries). What is still pending (a batch that gave up at the shutdown
    deadline) is handed back first, made claimable at once instead of after `claim_idle_ms`.
    """
    s = processor.settings
    for stream in s.streams:
        for consumer in consumers:
            try:
                handed = await hand_back(processor, stream, consumer)
                pending = await processor.scripts.leave(stream, s.group, consumer)
            except LEAVE_ERRORS as exc:
                logger.warning("could not leave the group as %s on %r: %s", consumer, stream, exc)
                continue
            if pending > 0:
                logger.warning(
                    "consumer %s keeps %d pending entries of %r in group %r (%d handed back: "
                    "other consumers claim them at their next look, the operator dead-letters "
                    "what nobody takes)",
                    consumer, pending, stream, s.group, handed,
                )  # fmt: skip


async def hand_back(processor: Processor, stream: str, consumer: str) -> int:
    """Make `consumer`'s pending entries of `stream` claimable now; how many.

    `XCLAIM ... IDLE <claim_idle_ms> JUSTID` to the same consumer sets their idle time as if
    they had waited the whole claim period, without counting a delivery: live consumers'
    claimers (every `claim_interval_ms`) take them at their next look. Without this, a pod
    scaled in while holding entries left them stranded for `claim_idle_ms`.
    """
    s = processor.settings
    handed, start = 0, "-"
    for _ in range(HAND_BACK_PAGES):
        page = await pending_entries(
            processor.redis, stream, s.group, count=HAND_BACK_PAGE, start=start, consumer=consumer
        )
        if not page:
            break
        ids: list[Any] = [entry.id for entry in page]  # redis-py types the IDs invariantly
        await processor.redis.xclaim(
            stream, s.group, consumer, 0, ids, idle=s.claim_idle_ms, justid=True
        )
        handed += len(ids)
        if len(page) < HAND_BACK_PAGE:
            break
        start = "(" + ids[-1]
    return handed
