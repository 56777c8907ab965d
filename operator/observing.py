"""What one poll reads from Redis about a consumer group: lag, pending, consumers."""

from __future__ import annotations

import dataclasses

import redis.asyncio as aioredis

from streamscale.core.streams import (
    ConsumerInfo,
    GroupInfo,
    as_str,
    consumer_infos,
    ensure_group,
    estimate_unread,
    group_info,
    id_key,
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


class GroupMissing(Exception):
    """The group was seen before and is gone while its stream still has entries."""


async def observe(
    redis: aioredis.Redis,
    stream: str,
    group: str,
    *,
    estimate_limit: int,
    seen_before: bool = False,
) -> Observation:
    """`XINFO GROUPS` and `XINFO CONSUMERS` for one group; creates the group when missing.

    Creating the group (from the stream's start, like the consumer does) gives Redis something
    to compute the lag against before the first consumer pod ever ran. A group `seen_before`
    that is gone while the stream still has entries was destroyed (`XGROUP DESTROY`): creating
    it at the start would replay the whole stream, so that raises GroupMissing instead.
    """
    info = await group_info(redis, stream, group)
    if info is None:
        if seen_before and await redis.xlen(stream) > 0:
            raise GroupMissing(
                f"group {group!r} is gone from stream {stream!r}, which still has entries"
                " (XGROUP DESTROY?); not recreating it at the start, that would replay the whole"
                f" stream. Recreate it where it should go on: XGROUP CREATE {stream} {group}"
                " <last-delivered-id>"
            )
        await ensure_group(redis, stream, group, "0")
        info = await group_info(redis, stream, group)
        if info is None:
            raise RuntimeError(f"group {group} of stream {stream} vanished right after creation")
    if info.lag is None:
        lag, _ = await estimate_unread(redis, stream, info, limit=estimate_limit)
        estimated = True
    else:
        lag, estimated = await checked_lag(redis, stream, info), False
    consumers = tuple(await consumer_infos(redis, stream, group)) if info.consumers else ()
    return Observation(
        lag=lag, lag_estimated=estimated, pending=info.pending, consumers=consumers, group=info
    )


async def checked_lag(redis: aioredis.Redis, stream: str, info: GroupInfo) -> int:
    """`XINFO GROUPS` lag, checked against the stream's own bounds.

    redis-server 7.0 restores a group's entries-read from the last AOF rewrite, so after a
    restart the reported lag counts every entry read since that rewrite, for good. Two cheap
    facts bound it: nothing is unread once the group has delivered the stream's last generated
    ID, and nothing unread exceeds the stream's length.
    """
    assert info.lag is not None
    if info.lag == 0:
        return 0
    raw = await redis.execute_command("XINFO", "STREAM", stream)
    stream_info = {as_str(k): v for k, v in (raw.items() if isinstance(raw, dict) else [])}
    last_generated = as_str(stream_info.get("last-generated-id"))
    if last_generated and id_key(info.last_delivered_id) >= id_key(last_generated):
        return 0
    length = stream_info.get("length")
    return min(info.lag, int(length)) if length is not None else info.lag
