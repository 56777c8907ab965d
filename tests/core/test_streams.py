"""Stream primitives of `streamscale.core.streams`, on a real redis-server."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from streamscale.core.streams import Recreated, group_info, recreate_group_if_empty


async def test_a_group_lost_with_its_stream_is_recreated(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    stream = names("orders")
    assert await recreate_group_if_empty(redis, stream, "g") is Recreated.CREATED
    info = await group_info(redis, stream, "g")
    assert info is not None and info.last_delivered_id == "0-0"
    assert await redis.xlen(stream) == 0


async def test_a_group_gone_from_an_emptied_stream_is_recreated_at_the_given_id(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    stream = names("orders")
    entry_id = await redis.xadd(stream, {"n": "1"})
    await redis.xdel(stream, entry_id)
    assert await recreate_group_if_empty(redis, stream, "g", "$") is Recreated.CREATED
    info = await group_info(redis, stream, "g")
    assert info is not None and info.last_delivered_id == entry_id.decode()


async def test_a_group_destroyed_on_a_stream_with_entries_is_not_recreated(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    stream = names("orders")
    await redis.xadd(stream, {"n": "1"})
    await redis.xgroup_create(stream, "g", id="0")
    await redis.xgroup_destroy(stream, "g")
    assert await recreate_group_if_empty(redis, stream, "g") is Recreated.REFUSED
    assert await group_info(redis, stream, "g") is None
    assert await redis.xlen(stream) == 1


async def test_a_group_someone_else_recreated_is_left_alone(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    """Even when entries arrived since: it exists, it was not destroyed."""
    stream = names("orders")
    await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    await redis.xadd(stream, {"n": "1"})
    await redis.xreadgroup("g", "c", {stream: ">"}, count=1)
    assert await recreate_group_if_empty(redis, stream, "g") is Recreated.EXISTS
    info = await group_info(redis, stream, "g")
    assert info is not None and info.pending == 1, "the group's state is untouched"
