"""One logical stream sharded across a Redis Cluster: `{orders:0}` .. `{orders:N-1}`.

Each shard is a stream of its own whose whole name is its hash tag, so the cluster spreads the
shards over its masters (one slot each), and a shard's dead-letter stream `{orders:0}:dlq` and
its counters share its slot. A producer sends a message to `shard_stream(stream, key, n)`: the
same partition key always lands in the same shard, so one key's messages keep their order.

The shard of a key is `crc32(key) mod n` (CRC-32 as in zlib, Java's `CRC32`, Go's
`hash/crc32.ChecksumIEEE`), so producers in any language can compute it.
"""

from __future__ import annotations

import re
import zlib

MAX_SHARDS = 1024

_SHARD = re.compile(r"^\{(?P<stream>.+):(?P<index>0|[1-9][0-9]*)\}$")


def shard_for(key: str | bytes | int, shards: int) -> int:
    """The shard (0 .. shards-1) of a partition key: stable across processes and languages."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    data = key if isinstance(key, bytes) else str(key).encode()
    return zlib.crc32(data) % shards


def shard_name(stream: str, index: int) -> str:
    """The key of shard `index` of the logical stream `stream`: `{stream:index}`."""
    return f"{{{stream}:{index}}}"


def shard_streams(stream: str, shards: int) -> list[str]:
    """Every shard's key, in order."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be within 1..{MAX_SHARDS}, got {shards}")
    return [shard_name(stream, i) for i in range(shards)]


def shard_stream(stream: str, key: str | bytes | int, shards: int) -> str:
    """The shard of `stream` that a message with partition key `key` goes to."""
    return shard_name(stream, shard_for(key, shards))


def logical_stream(name: str) -> tuple[str, int] | None:
    """`("orders", 3)` for a shard key `{orders:3}`, None for any other stream."""
    match = _SHARD.match(name)
    return None if match is None else (match["stream"], int(match["index"]))
