"""A consumer group's lag, as the operator, `streamscale status` and the demo all read it.

`XINFO GROUPS` lag is not always the truth:

- it is NULL after XDEL/XTRIM or for a group created at an arbitrary ID. NULL is never zero
  (that is how scalers scale to zero with work left): the entries after the group's
  last-delivered-id are counted with a bounded XRANGE instead, exact below the bound and a lower
  bound at it;
- redis-server 7.0 restores a group's entries-read from the last AOF rewrite, so after a restart
  the reported lag counts every entry read since that rewrite, for good. Two cheap facts of
  `XINFO STREAM` bound it: nothing is unread once the group has delivered the stream's last
  generated ID, and nothing unread exceeds the stream's length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from streamscale.core.streams import Client, GroupInfo, as_str, id_key

SOURCE_XINFO = "xinfo"
SOURCE_ESTIMATE = "estimate"
DEFAULT_LIMIT = 100_000
"""XRANGE bound when lag is NULL and the unread entries have to be counted."""


@dataclasses.dataclass(frozen=True)
class Lag:
    """Entries not yet delivered to a group, and how the figure was had."""

    count: int
    source: str
    """`xinfo` (XINFO GROUPS, bounded by XINFO STREAM) or `estimate` (NULL lag: XRANGE count)."""
    exact: bool
    """False only for an estimate that reached the XRANGE bound (a lower bound)."""

    @property
    def estimated(self) -> bool:
        return self.source == SOURCE_ESTIMATE


async def stream_info(redis: Client, stream: str) -> dict[str, Any]:
    """`XINFO STREAM` (O(1) without FULL) with text keys; empty when the stream is gone."""
    raw = await redis.execute_command("XINFO", "STREAM", stream)
    return {as_str(k): v for k, v in (raw.items() if isinstance(raw, dict) else [])}


def entries_added(stream: Mapping[str, Any]) -> int | None:
    """`XINFO STREAM` entries-added: every entry ever added (the arrival counter), or None."""
    added = stream.get("entries-added")
    return None if added is None else int(added)


async def estimate_unread(
    redis: Client, stream: str, info: GroupInfo, *, limit: int = DEFAULT_LIMIT
) -> tuple[int, bool]:
    """Entries after the group's last-delivered-id: `(count, exact)`.

    Counts with a bounded XRANGE; past `limit` it answers `limit` and `exact=False`, which is
    enough for scaling decisions and never zero while entries remain.
    """
    start = "(" + info.last_delivered_id
    raw: Any = await redis.xrange(stream, min=start, max="+", count=limit)
    return len(raw), len(raw) < limit


def bounded(info: GroupInfo, stream: Mapping[str, Any]) -> int:
    """A non-NULL `XINFO GROUPS` lag, bounded by the stream's last ID and length."""
    assert info.lag is not None
    if info.lag == 0:
        return 0
    last_generated = as_str(stream.get("last-generated-id"))
    if last_generated and id_key(info.last_delivered_id) >= id_key(last_generated):
        return 0
    length = stream.get("length")
    return min(info.lag, int(length)) if length is not None else info.lag


async def group_lag(
    redis: Client,
    stream: str,
    info: GroupInfo,
    *,
    limit: int = DEFAULT_LIMIT,
    stream_fields: Mapping[str, Any] | None = None,
) -> Lag:
    """The group's lag: XINFO's bounded, or the XRANGE count when XINFO says NULL."""
    if info.lag is None:
        count, exact = await estimate_unread(redis, stream, info, limit=limit)
        return Lag(count, SOURCE_ESTIMATE, exact)
    if info.lag == 0:
        return Lag(0, SOURCE_XINFO, True)
    fields = stream_fields if stream_fields is not None else await stream_info(redis, stream)
    return Lag(bounded(info, fields), SOURCE_XINFO, True)
