"""Reading: one loop per consumer name, its own pending entries first, then new ones.

A reader starts at ID 0 (what was delivered to this name and never acked: a restart's
leftovers), then reads `>` with BLOCK. After a Redis error it goes back to ID 0; after NOGROUP
it recreates the group, but only on an empty or missing stream (see `_recreate_group`).
"""

from __future__ import annotations

import logging
from typing import Any

from redis import exceptions as redis_errors

from streamscale.consumer.processing import REDIS_TRANSIENT, GaveUp, Processor
from streamscale.core.backoff import Backoff
from streamscale.core.errors import ConfigError
from streamscale.core.streams import Entry, ensure_group, is_nogroup, parse_entries

logger = logging.getLogger(__name__)


class Reader:
    """One consumer name's loop: pending entries first, then new ones."""

    def __init__(self, processor: Processor, consumer: str) -> None:
        self.p = processor
        self.consumer = consumer
        self.settings = processor.settings

    async def run(self) -> None:
        backoff = Backoff(base=0.1, cap=10.0)
        cursor: str | None = "0"  # own pending entries first; None once they are done
        while not self.p.shutdown.stopping.is_set():
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
                self.p.shutdown.fail(exc)
                return
            except REDIS_TRANSIENT as exc:  # first: ReadOnlyError and TryAgainError are
                self.p.redis_health.failed(exc, "reading")  # ResponseErrors too (failover)
                await backoff.sleep(self.p.shutdown.stopping)
                cursor = "0"  # what was delivered but not acked is ours to finish
            except redis_errors.ResponseError as exc:
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
                self.p.group_destroyed()
                await backoff.sleep(self.p.shutdown.stopping)
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
        await backoff.sleep(self.p.shutdown.stopping)
