"""Commands packed by hiredis (`streamscale.core.packing`): the same bytes as redis-py's own
packing, on every kind of connection `connect` makes."""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError

from streamscale.core.packing import HiredisPacking, packing_class
from tests.support.commands import connected_round_trip
from tests.support.servers import RedisServer


class Level(enum.IntEnum):
    HIGH = 1


class Name(str):
    pass


IDS = [f"{1700000000000 + n}-{n % 7}" for n in range(500)]

COMMANDS: list[tuple[object, ...]] = [
    ("XACK", "orders", "g", *IDS),
    (b"XACK", b"orders", b"g", *[i.encode() for i in IDS]),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", "x"),
    ("SET", "k", 7, "EX", 10.5),
    ("SET", "k", -(2**70)),
    ("SET", "k", 0.1),
    ("SET", "käse", "naïve ✓"),
    ("SET", "k", b"\x00\xff" * 10_000),  # above redis-py's 6,000-byte chunking
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", bytearray(b"array")),
    ("SET", "k", Name("sub")),
    ("SET", "k", Level.HIGH),  # hiredis refuses it: redis-py's packing decides
]


@pytest.mark.parametrize("args", COMMANDS, ids=range(len(COMMANDS)))
def test_hiredis_packing_gives_the_bytes_redis_py_gives(args: tuple[object, ...]) -> None:
    ours = packing_class(Connection)(host="127.0.0.1", port=1)
    theirs = Connection(host="127.0.0.1", port=1)
    assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args))


@pytest.mark.parametrize("value", [True, None, {"a": 1}])
def test_what_redis_py_refuses_is_refused_alike(value: object) -> None:
    with pytest.raises(DataError):
        packing_class(Connection)(host="127.0.0.1", port=1).pack_command("SET", "k", value)


def test_a_connection_class_is_made_once_and_keeps_its_name() -> None:
    made = packing_class(UnixDomainSocketConnection)
    assert made is packing_class(UnixDomainSocketConnection)
    assert packing_class(made) is made
    assert issubclass(made, HiredisPacking) and issubclass(made, UnixDomainSocketConnection)
    assert made.__name__ == "UnixDomainSocketConnection"


async def test_a_plain_tcp_client_packs_with_hiredis(
    redis_server: RedisServer, names: Callable[[str], str]
) -> None:
    assert await connected_round_trip(redis_server.url, names("orders"))


async def test_a_unix_socket_client_packs_with_hiredis(
    tmp_path: Path, names: Callable[[str], str]
) -> None:
    socket = tmp_path / "redis.sock"
    server = RedisServer(extra=["--unixsocket", str(socket), "--unixsocketperm", "700"])
    server.start()
    try:
        (cls,) = await connected_round_trip(f"unix://{socket}", names("orders"))
        assert issubclass(cls, HiredisPacking) and issubclass(cls, UnixDomainSocketConnection)
    finally:
        server.close()
