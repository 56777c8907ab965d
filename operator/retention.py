"""`spec.retention`: trim a stream, never beyond what every group has read and acknowledged."""

from __future__ import annotations

from streamscale.core.streams import (
    Client,
    StreamId,
    as_str,
    group_infos,
    id_key,
    now_millis,
)
from streamscale.operator.specs import Retention


async def safe_min_id(redis: Client, stream: str) -> StreamId | None:
    """The lowest of every group's last-delivered-id and oldest pending ID; None: no group."""
    candidates: list[StreamId] = []
    for info in await group_infos(redis, stream):
        candidates.append(info.last_delivered_id)
        if info.pending:
            summary = await redis.xpending(stream, info.name)
            if summary and summary.get("min"):
                candidates.append(as_str(summary["min"]))
    if not candidates:
        return None
    return min(candidates, key=id_key)


def wanted_min_id(retention: Retention, now_ms: int) -> StreamId | None:
    """The ID below which the retention rule wants entries gone."""
    ids: list[StreamId] = []
    if retention.max_age_seconds is not None:
        ids.append(f"{max(0, now_ms - int(retention.max_age_seconds * 1000))}-0")
    if retention.min_id:
        ids.append(retention.min_id)
    return max(ids, key=id_key) if ids else None


async def trim(redis: Client, stream: str, retention: Retention) -> int:
    """XTRIM MINID to the retention rule's ID, capped at the safe ID; returns entries trimmed.

    Streams without any consumer group are left alone: nothing says what was read.
    """
    wanted = wanted_min_id(retention, now_millis())
    safe = await safe_min_id(redis, stream)
    if wanted is None or safe is None:
        return 0
    # XTRIM MINID keeps entries >= the ID: the last-delivered entry itself and the oldest pending
    # one are kept, everything below them has been read and acknowledged by every group.
    target = min(wanted, safe, key=id_key)
    if target == "0-0":
        return 0
    return int(await redis.xtrim(stream, minid=target, approximate=False))
