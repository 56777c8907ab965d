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

from streamscale.consumer.processing import REDIS_TRANSIENT, GaveUp, Processor
from streamscale.core.errors import ConfigError
from streamscale.core.streams import is_nogroup, parse_entries

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
            if self.p.shutdown.stopping.is_set():
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
