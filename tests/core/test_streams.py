"""Stream primitives of `streamscale.core.streams`, on a real redis-server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from streamscale.core.streams import (
    Entry,
    Recreated,
    connect,
    group_info,
    parse_entries,
    recreate_group_if_empty,
    use_read_reply,
)
from tests.support.servers import RedisServer


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


async def test_read_reply_gives_what_redis_py_and_parse_entries_give(
    redis_server: RedisServer, names: Callable[[str], str]
) -> None:
    """One field, several fields, an entry deleted while pending (nil), two streams, and a
    blocked read that times out; over RESP2 and RESP3."""
    one, two = names("one"), names("two")
    for protocol in (2, 3):
        plain = connect(f"{redis_server.url}?protocol={protocol}")
        ours = connect(f"{redis_server.url}?protocol={protocol}")
        use_read_reply(ours)
        try:
            for stream in (one, two):
                await plain.delete(stream)
                await plain.xgroup_create(stream, "g", id="0", mkstream=True)
            await plain.xadd(one, {"data": b'{"n": 1}'})
            gone = await plain.xadd(one, {"a": "1", "b": b"\xff", "c": ""})
            await plain.xadd(two, {"data": b"x"})
            first = await ours.xreadgroup("g", "c", {one: ">", two: ">"}, count=10)
            assert [(s, [e[0] for e in entries]) for s, entries in first] == [
                (one, [e[0] for e in await _entries(plain, one)]),
                (two, [e[0] for e in await _entries(plain, two)]),
            ]
            await plain.xdel(one, gone)
            again = await ours.xreadgroup("g", "c", {one: "0"}, count=10)
            expected = parse_entries(
                _stream_entries(await plain.xreadgroup("g", "c", {one: "0"}, count=10))
            )
            assert again == [(one, expected)]
            assert expected[1] == (gone.decode(), None)
            assert expected[0][1] == {b"data": b'{"n": 1}'}
            assert await ours.xreadgroup("g", "c", {one: ">"}, count=10, block=10) == []
        finally:
            await plain.aclose()
            await ours.aclose()


async def _entries(client: aioredis.Redis, stream: str) -> list[Entry]:
    return parse_entries(await client.xrange(stream))


def _stream_entries(reply: Any) -> Any:
    """redis-py's XREADGROUP reply of one stream: pairs (RESP2), or a map to a list (RESP3)."""
    return next(iter(reply.values()))[0] if isinstance(reply, dict) else reply[0][1]
