"""Reading: one loop per consumer name over every stream, its own pending entries first.

On a Redis Cluster, whose XREADGROUP reads only within one hash slot, there is one loop per
consumer name and slot (the shards of a logical stream each have a slot): no shard waits on
another's BLOCK, and the byte budget is split between the loops.

A reader starts at ID 0 on each stream (what was delivered to this name and never acked: a
restart's leftovers), then reads `>` of all its streams in one XREADGROUP with BLOCK; COUNT
applies per stream, so a busy stream cannot starve a quiet one. After a Redis error it goes back
to ID 0. After NOGROUP it recreates the group, but only on an empty or missing stream: a stream
whose group was destroyed while it still has entries is left out (and reported) until the
group is back, and the other streams go on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis import exceptions as redis_errors

from streamscale.consumer.processing import REDIS_ERRORS, GaveUp, Processor
from streamscale.core.backoff import Backoff
from streamscale.core.errors import ConfigError
from streamscale.core.streams import (
    Entry,
    Recreated,
    is_nogroup,
    is_unblocked_by_failover,
    recreate_group_if_empty,
)

logger = logging.getLogger(__name__)

MISSING_RECHECK_SECONDS = 5.0
"""How often a reader looks whether a destroyed group is back, while other streams flow."""


class Reader:
    """One consumer name's loop: pending entries first, then new ones, over every stream."""

    def __init__(
        self,
        processor: Processor,
        consumer: str,
        streams: list[str] | None = None,
        *,
        readers_per_name: int = 1,
    ) -> None:
        self.p = processor
        self.consumer = consumer
        self.settings = processor.settings
        self.streams = streams or processor.settings.streams
        """This loop's streams: all of them, or on a Redis Cluster one hash slot's."""
        self.share = readers_per_name
        """Loops under this consumer name (one per slot): they split the byte budget."""
        self.cursors: dict[str, str] = {}
        """Streams still reading their own pending entries, and where (none: all read `>`)."""
        self._rechecked = 0.0

    async def run(self) -> None:
        backoff = Backoff(base=0.1, cap=10.0)
        stopping = self.p.shutdown.stopping
        self._restart_pending()
        while not stopping.is_set():
            try:
                await self._recheck_missing()
                active = [s for s in self.streams if s not in self.p.group_missing]
                if not active:
                    await backoff.sleep(stopping)
                    continue
                if self.cursors:
                    await self._pending_step()
                else:
                    await self._new_step(active)
                self.p.redis_health.recovered()
                backoff.reset()
            except GaveUp:
                return
            except ConfigError as exc:
                self.p.shutdown.fail(exc)
                return
            except REDIS_ERRORS as exc:
                if self.p.redis_failed(exc, "reading"):
                    return
                await backoff.sleep(stopping)
                self._restart_pending()  # what was delivered but not acked is ours to finish
            except redis_errors.ResponseError as exc:
                if is_unblocked_by_failover(exc):  # the group is on the new master: read again
                    self.p.redis_health.failed(exc, "reading")
                    await backoff.sleep(stopping)
                    self._restart_pending()
                    continue
                if not is_nogroup(exc):
                    raise
                await self._recreate_groups()
                await backoff.sleep(stopping)
                self._restart_pending()

    def _restart_pending(self) -> None:
        self.cursors = {s: "0" for s in self.streams if s not in self.p.group_missing}

    async def _pending_step(self) -> None:
        """Read and process the next batch of one stream's own pending entries."""
        stream, cursor = next(iter(self.cursors.items()))
        s = self.settings
        read: Any = await self.p.redis.xreadgroup(
            s.group, self.consumer, {stream: cursor}, count=self.p.read_count(self.share)
        )
        entries: list[Entry] = read[0][1] if read else []
        self.p.group_is_back(stream)
        if not entries:
            del self.cursors[stream]
            return
        self.cursors[stream] = entries[-1][0]
        await self.p.process_redelivered(self.consumer, stream, entries)

    async def _new_step(self, active: list[str]) -> None:
        """Read new entries of every active stream (blocking) and process each stream's batch."""
        s = self.settings
        read: Any = await self.p.redis.xreadgroup(
            s.group, self.consumer, dict.fromkeys(active, ">"),
            count=self.p.read_count(len(active) * self.share), block=s.block_ms,
        )  # fmt: skip
        for stream, entries in read:  # `use_read_reply`'s (stream, entries) pairs
            if entries:
                await self.p.process(self.consumer, stream, entries)

    async def _recreate_groups(self) -> None:
        """Some group (or a whole stream) is gone, e.g. Redis restarted empty: recreate it.

        Only where the stream is gone or empty too. A group destroyed (`XGROUP DESTROY`) on a
        stream that still has entries would be recreated at the start ID and replay the whole
        stream, through handlers too: that stream is left out until someone recreates the group
        where it should be or empties the stream.
        """
        for stream in self.streams:
            await self._recreate_group(stream)

    async def _recreate_group(self, stream: str) -> None:
        s = self.settings
        try:
            outcome = await recreate_group_if_empty(self.p.redis, stream, s.group, s.group_start_id)
        except REDIS_ERRORS as exc:
            # A refusal stops the process (raising would escape `run`'s handlers: this runs
            # in one of them); Redis being away is retried at the next read.
            self.p.redis_failed(exc, "recreating the group")
            return
        if outcome is Recreated.REFUSED:
            self.p.group_destroyed(stream)
            return
        if outcome is Recreated.CREATED:
            logger.warning(
                "group %r on stream %r was missing (Redis restarted empty?); recreated it at %s",
                s.group, stream, s.group_start_id,
            )  # fmt: skip
        self.p.group_is_back(stream)

    async def _recheck_missing(self) -> None:
        """Now and then, see whether a destroyed group is back (someone recreated it)."""
        if not self.p.group_missing:
            return
        now = time.monotonic()
        if now - self._rechecked < MISSING_RECHECK_SECONDS:
            return
        self._rechecked = now
        for stream in [s for s in self.streams if s in self.p.group_missing]:  # ours only
            await self._recreate_group(stream)
            if stream not in self.p.group_missing:
                self.cursors[stream] = "0"
