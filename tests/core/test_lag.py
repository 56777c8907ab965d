"""The one lag reading the operator, `streamscale status` and the demo share, on a real Redis."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from streamscale.cli import snapshots
from streamscale.core import lag
from streamscale.core.streams import GroupInfo, group_info


async def test_null_lag_after_xdel_is_counted_never_zero(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    stream = names("orders")
    ids = [await redis.xadd(stream, {"n": str(n)}) for n in range(10)]
    await redis.xgroup_create(stream, "g", id="0")
    await redis.xreadgroup("g", "c", {stream: ">"}, count=3)
    await redis.xdel(stream, ids[5])  # a deleted entry after the last-delivered-id: NULL lag
    info = await group_info(redis, stream, "g")
    assert info is not None and info.lag is None
    read = await lag.group_lag(redis, stream, info)
    assert read == lag.Lag(6, lag.SOURCE_ESTIMATE, True)
    bounded = await lag.group_lag(redis, stream, info, limit=4)
    assert (bounded.count, bounded.exact) == (4, False), "a lower bound at the limit, not zero"


async def test_a_group_made_at_an_arbitrary_id_is_counted_from_there(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    stream = names("orders")
    ids = [await redis.xadd(stream, {"n": str(n)}) for n in range(10)]
    await redis.xgroup_create(stream, "g", id=ids[6])
    info = await group_info(redis, stream, "g")
    assert info is not None
    read = await lag.group_lag(redis, stream, info)
    assert read.count == 3


def test_an_over_reported_lag_is_bounded_by_the_stream() -> None:
    """redis 7.0 after an AOF restart: entries-read from the last rewrite, lag too high."""
    info = GroupInfo("g", 1, 0, "5-0", entries_read=2, lag=8)
    assert lag.bounded(info, {"last-generated-id": "5-0", "length": 5}) == 0
    assert lag.bounded(info, {"last-generated-id": "9-0", "length": 3}) == 3
    assert lag.bounded(info, {"last-generated-id": "9-0", "length": 50}) == 8


async def test_status_reads_lag_the_same_way_as_the_operator(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    stream = names("orders")
    ids = [await redis.xadd(stream, {"n": str(n)}) for n in range(10)]
    await redis.xgroup_create(stream, "g", id="0")
    await redis.xreadgroup("g", "c", {stream: ">"}, count=3)
    await redis.xdel(stream, ids[5])
    snapshot = await snapshots.collect(redis, [stream])
    (group,) = snapshot.streams[0].groups
    assert (group.lag, group.lag_source, group.lag_exact) == (6, "estimate", True)
