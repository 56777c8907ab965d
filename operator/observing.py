"""What one poll reads from Redis about a consumer group: lag, pending, consumers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from streamscale.core import lag
from streamscale.core.streams import (
    Client,
    ConsumerInfo,
    GroupInfo,
    Recreated,
    consumer_infos,
    ensure_group,
    group_info,
    recreate_group_if_empty,
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

    stream: str = ""
    """The stream observed ("" for the sum over several)."""

    @property
    def backlog(self) -> int:
        """What the scaling policy works on: lag + pending."""
        return self.lag + self.pending


def combine(group: str, observations: Mapping[str, Observation]) -> Observation:
    """The sum over the streams of one StreamConsumer: what its one Deployment is scaled on.

    Lag, pending and the rate counters add up (a counter unknown on any stream is unknown in
    the sum); each consumer reads every stream, so its pending counts add up and it is as
    recently active as on its most active stream.
    """
    if len(observations) == 1:
        return next(iter(observations.values()))
    parts = list(observations.values())
    consumers: dict[str, ConsumerInfo] = {}
    for part in parts:
        for info in part.consumers:
            seen = consumers.get(info.name)
            consumers[info.name] = info if seen is None else _merged(seen, info)
    entries_read = [p.group.entries_read for p in parts]
    lags = [p.group.lag for p in parts]
    added = [p.entries_added for p in parts]
    return Observation(
        lag=sum(p.lag for p in parts),
        lag_estimated=any(p.lag_estimated for p in parts),
        pending=sum(p.pending for p in parts),
        consumers=tuple(consumers.values()),
        group=GroupInfo(
            name=group,
            consumers=len(consumers),
            pending=sum(p.group.pending for p in parts),
            last_delivered_id="",
            entries_read=None if None in entries_read else sum(e or 0 for e in entries_read),
            lag=None if None in lags else sum(lag or 0 for lag in lags),
        ),
        entries_added=None if None in added else sum(a or 0 for a in added),
    )


def _merged(a: ConsumerInfo, b: ConsumerInfo) -> ConsumerInfo:
    inactive = (
        None
        if None in (a.inactive_ms, b.inactive_ms)
        else min(a.inactive_ms or 0, b.inactive_ms or 0)
    )
    return ConsumerInfo(a.name, a.pending + b.pending, min(a.idle_ms, b.idle_ms), inactive)


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
        if not seen_before:
            await ensure_group(redis, stream, group, "0")
        elif await recreate_group_if_empty(redis, stream, group, "0") is Recreated.REFUSED:
            raise GroupMissing(
                f"group {group!r} is gone from stream {stream!r}, which still has entries"
                " (XGROUP DESTROY?); not recreating it at the start, that would replay the whole"
                f" stream. Recreate it where it should go on: XGROUP CREATE {stream} {group}"
                " <last-delivered-id>"
            )
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
        stream=stream,
    )
