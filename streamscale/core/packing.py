"""Redis commands packed by hiredis (C) instead of redis-py's asyncio code (Python).

redis-py's synchronous client packs commands with `hiredis.pack_command` when hiredis is
installed; its asyncio connections always pack in Python, argument by argument. A consumer's
per-batch `XACK` carries one argument per message: packed in Python it cost 0.51 µs per ID,
with hiredis 0.06 µs (bench/README.md). `use_hiredis_packing` gives a client's connections a
subclass of their own class (plain, TLS, unix socket, Sentinel-managed, Cluster node) that
packs with hiredis; everything else about the connection stays redis-py's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.utils import HIREDIS_AVAILABLE

C = TypeVar("C", bound=AbstractConnection)

_pack: Callable[[tuple[Any, ...]], bytes] | None = None
if HIREDIS_AVAILABLE:  # a dependency; without it redis-py's own packing stays
    from hiredis import pack_command as _pack


class HiredisPacking(AbstractConnection):
    """Mixed in before a redis-py asyncio connection class: `pack_command` in C.

    What hiredis refuses (a bool, None, a bytearray, an IntEnum) goes to redis-py's own packing,
    which then behaves exactly as without this class (a DataError, or its own encoding).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        packed = args
        # Like redis-py: a command name with a space ("CONFIG GET") is several arguments.
        if isinstance(first, str):
            if " " in first:
                packed = (*first.encode().split(), *args[1:])
        elif b" " in first:
            packed = (*first.split(), *args[1:])
        try:
            return [_pack(packed)]  # type: ignore[misc]
        except TypeError:
            return super().pack_command(*args)


_made: dict[type[Any], type[Any]] = {}


def packing_class(cls: type[C]) -> type[C]:
    """`cls` with hiredis packing (itself when it has it already or hiredis is missing)."""
    if _pack is None or issubclass(cls, HiredisPacking):
        return cls
    if cls not in _made:
        _made[cls] = type(cls.__name__, (HiredisPacking, cls), {"__module__": __name__})
    return _made[cls]


def use_hiredis_packing(client: Any) -> None:
    """Make every connection `client` opens from now on pack with hiredis.

    Call it before the first command: connections are made lazily, so none exists yet.
    """
    if isinstance(client, RedisCluster):
        # Nodes found later (slot map refreshes, MOVED) are made from these kwargs.
        kwargs = client.nodes_manager.connection_kwargs
        kwargs["connection_class"] = packing_class(kwargs["connection_class"])
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = packing_class(node.connection_class)
        return
    pool = client.connection_pool
    pool.connection_class = packing_class(pool.connection_class)
