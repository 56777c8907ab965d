"""What one poll reads from Redis about a consumer group: lag, pending, consumers."""

from __future__ import annotations

import dataclasses

import redis.asyncio as aioredis
from streamscale.consumer.streams import (
    ConsumerInfo,
    GroupInfo,
    consumer_infos,
    ensure_group,
    estimate_unread,
    group_info,
)


@dataclasses.dataclass(frozen=True)
class Observation:
    """The group's state as one poll saw it."""

    lag: int
    """Entries not yet delivered to the group (exact, or an estimate when `lag_estimated`)."""
    lag_estimated: bool
    """Redis reported lag as NULL (entries deleted after the last-delivered-id), so `lag` is
    counted with a bounded XRANGE: exact below the bound, a lower bound at it, never zero while
    unread entries remain."""
    pending: int
    consumers: tuple[ConsumerInfo, ...]
    group: GroupInfo

    @property
    def backlog(self) -> int:
        """What the scaling policy works on: lag + pending."""
        return self.lag + self.pending


async def observe(
    redis: aioredis.Redis, stream: str, group: str, *, estimate_limit: int
) -> Observation:
    """`XINFO GROUPS` and `XINFO CONSUMERS` for one group; creates the group when missing.

    Creating the group (from the stream's start, like the consumer does) gives Redis something
    to compute the lag against before the first consumer pod ever ran.
    """
    info = await group_info(redis, stream, group)
    if info is None:
        await ensure_group(redis, stream, group, "0")
        info = await group_info(redis, stream, group)
        if info is None:
            raise RuntimeError(f"group {group} of stream {stream} vanished right after creation")
    if info.lag is None:
        lag, _ = await estimate_unread(redis, stream, info, limit=estimate_limit)
        estimated = True
    else:
        lag, estimated = info.lag, False
    consumers = tuple(await consumer_infos(redis, stream, group)) if info.consumers else ()
    return Observation(
        lag=lag, lag_estimated=estimated, pending=info.pending, consumers=consumers, group=info
    )
