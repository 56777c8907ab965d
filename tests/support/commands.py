"""One consumer batch's Redis commands through a client, checked: for tests of `connect`."""

from __future__ import annotations

from redis.asyncio.connection import AbstractConnection

from streamscale.core.packing import HiredisPacking
from streamscale.core.streams import Client, connect, is_cluster


def packs_with_hiredis(client: Client) -> bool:
    """True when every connection the client makes (on a Cluster: on every node) packs in C."""
    if is_cluster(client):
        nodes = client.get_nodes()  # type: ignore[union-attr]
        return bool(nodes) and all(issubclass(n.connection_class, HiredisPacking) for n in nodes)
    return issubclass(client.connection_pool.connection_class, HiredisPacking)  # type: ignore[union-attr]


async def round_trip(client: Client, stream: str, count: int = 500) -> None:
    """XADD in a pipeline, XREADGROUP, one XACK of every ID: what a consumer batch sends."""
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    async with client.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.xadd(stream, {"data": f'{{"n": {n}, "name": "naïve"}}', "level": 3})
        ids = await pipe.execute()
    read = await client.xreadgroup("g", "c", {stream: ">"}, count=count * 2)
    entries = read[0][1]
    assert [e[0] for e in entries] == ids
    assert entries[0][1] == {b"data": '{"n": 0, "name": "naïve"}'.encode(), b"level": b"3"}
    assert await client.xack(stream, "g", *[e[0].decode() for e in entries]) == count
    assert (await client.xpending(stream, "g"))["pending"] == 0


async def connected_round_trip(url: str, stream: str) -> list[type[AbstractConnection]]:
    """`connect(url)`, a `round_trip` on `stream`, every connection packing in C: the classes
    of its connections (one per node on a Cluster, found once the slot map is read)."""
    client = connect(url)
    try:
        await round_trip(client, stream)
        assert packs_with_hiredis(client)
        if is_cluster(client):
            return [n.connection_class for n in client.get_nodes()]  # type: ignore[union-attr]
        return [client.connection_pool.connection_class]  # type: ignore[union-attr]
    finally:
        await client.aclose()
