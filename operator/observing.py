"""What one poll reads from Redis about a consumer group: lag, pending, consumers."""

from __future__ import annotations

import dataclasses

from streamscale.core import lag
from streamscale.core.streams import (
    Client,
    ConsumerInfo,
    GroupInfo,
    consumer_infos,
    ensure_group,
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
    entries_added: int | None = None
    """`XINFO STREAM` entries-added: every entry ever added (the arrival counter)."""

    @property
    def backlog(self) -> int:
        """What the scaling policy works on: lag + pending."""
        return self.lag + self.pending


class GroupMissing(Exception):
    """The group was seen before and is gone while its stream still has entries."""


async def observe(
    redis: Client,
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
    stream_fields = await lag.stream_info(redis, stream)
    group_lag = await lag.group_lag(
        redis, stream, info, limit=estimate_limit, stream_fields=stream_fields
    )
    consumers = tuple(await consumer_infos(redis, stream, group)) if info.consumers else ()
    return Observation(
        lag=group_lag.count,
        lag_estimated=group_lag.estimated,
        pending=info.pending,
        consumers=consumers,
        group=info,
        entries_added=lag.entries_added(stream_fields),
    )
