"""Stream primitives shared by the consumer, the operator and the CLI.

Everything here talks to Redis through redis-py's asyncio client created with
`decode_responses=False`: payloads stay bytes until the decoder needs them.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.crc import key_slot
from redis.exceptions import ResponseError

from streamscale.core import redis_urls
from streamscale.core.packing import use_hiredis_packing

StreamId = str
Fields = dict[bytes, bytes]
Entry = tuple[StreamId, Fields | None]
"""An entry as read: its ID and its fields, or None when it was deleted from the stream."""


Client = aioredis.Redis | RedisCluster
"""What `connect` returns: one Redis (direct or the master Sentinel names) or a Redis Cluster."""


class SentinelMaster(aioredis.Redis):
    """The master a set of sentinels names, followed through failovers.

    redis-py's master client does not own the sentinel connections it asks the master's address
    from; this one closes them with itself, so no socket outlives the client.
    """

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def connect(url: str, **kwargs: Any) -> Client:
    """A client for `url` that keeps values as bytes.

    `url` is any of `redis_urls`' forms: one server (redis://, rediss://, unix://), the master
    of a Sentinel set (redis+sentinel://) or a Redis Cluster (redis+cluster://). A ValueError
    says what is wrong with it without quoting it.

    Commands are packed by hiredis (`packing`), as redis-py's synchronous client does.
    """
    kwargs.setdefault("health_check_interval", 15)
    kwargs.setdefault("socket_connect_timeout", 5)
    if not redis_urls.is_multi_host(url):
        kwargs.setdefault("retry_on_timeout", False)
        client: Client = aioredis.Redis.from_url(url, decode_responses=False, **kwargs)
    else:
        client = _multi_host(url, kwargs)
    use_hiredis_packing(client)
    return client


def _multi_host(url: str, kwargs: dict[str, Any]) -> Client:
    target = redis_urls.parse(url)
    if target.kind == "cluster":
        return _cluster(target, kwargs)
    options = {**target.options, **kwargs}
    sentinel_options = {
        **{k: v for k, v in kwargs.items() if k.startswith("socket_")},
        **target.sentinel_options,
    }
    sentinels = Sentinel(list(target.hosts), sentinel_kwargs=sentinel_options, **options)
    master: SentinelMaster = sentinels.master_for(
        target.master_name, redis_class=SentinelMaster, decode_responses=False
    )
    return master


def _cluster(target: redis_urls.RedisTarget, kwargs: dict[str, Any]) -> RedisCluster:
    # A cluster client retries timeouts itself (by re-reading the slot map): it has no
    # retry_on_timeout option.
    kwargs.pop("retry_on_timeout", None)
    options = {**target.options, **kwargs}
    nodes = [ClusterNode(host, port) for host, port in target.hosts]
    try:
        return RedisCluster(startup_nodes=nodes, decode_responses=False, **options)
    except TypeError as exc:
        # An option of the URL's query that only a one-server client knows.
        raise ValueError(f"an option of the URL does not apply to Redis Cluster ({exc})") from None


def is_cluster(client: Client) -> bool:
    """True for a Redis Cluster client: multi-key commands must keep to one hash slot."""
    return isinstance(client, RedisCluster)


def same_slot(*keys: str) -> bool:
    """True when every key maps to one Redis Cluster hash slot (shares its `{hash tag}`)."""
    return len({key_slot(key.encode()) for key in keys}) <= 1


def as_str(value: bytes | str | None) -> str:
    """Decode a Redis reply element that is text by contract (IDs, names, keys)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def id_millis(entry_id: StreamId) -> int:
    """The millisecond timestamp part of a stream entry ID."""
    return int(entry_id.partition("-")[0])


def id_key(entry_id: StreamId) -> tuple[int, int]:
    """A sort key for entry IDs (`"10-2" < "9-0"` as text, not as IDs)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def is_unblocked_by_failover(exc: BaseException) -> bool:
    """True when a blocked read ended because its server stopped being a master (a failover).

    Redis answers every blocked client "UNBLOCKED force unblock from blocking operation,
    instance state changed (master -> replica?)": the stream and the group are still there, on
    the new master, so the read is simply made again.
    """
    return (
        isinstance(exc, ResponseError)
        and str(exc).startswith("UNBLOCKED")
        and "instance state changed" in str(exc)
    )


def is_nogroup(exc: BaseException) -> bool:
    """True when Redis says the stream or the group does not exist (e.g. it restarted empty)."""
    # Inside a Lua script the error arrives wrapped ("ERR Error running script ... NOGROUP").
    # A read blocked while the stream or the group is deleted ends with "UNBLOCKED the stream
    # key no longer exists" (or "... consumer group ... no longer exists").
    return isinstance(exc, ResponseError) and (
        "NOGROUP" in str(exc)
        or (str(exc).startswith("UNBLOCKED") and not is_unblocked_by_failover(exc))
    )


def is_busygroup(exc: BaseException) -> bool:
    """True when XGROUP CREATE found the group already there."""
    return isinstance(exc, ResponseError) and str(exc).startswith("BUSYGROUP")


async def ensure_group(redis: Client, stream: str, group: str, start_id: str = "0") -> bool:
    """Create `group` on `stream` (and the stream itself) unless it exists; True if created."""
    try:
        await redis.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as exc:
        if is_busygroup(exc):
            return False
        raise
    return True


class Recreated(enum.Enum):
    """What `recreate_group_if_empty` did."""

    CREATED = "created"
    EXISTS = "exists"
    """Someone (another consumer, the operator) recreated it first: nothing to do."""
    REFUSED = "refused"
    """The stream still has entries: the group was destroyed on purpose, not lost with Redis."""


async def recreate_group_if_empty(
    redis: Client, stream: str, group: str, start_id: str = "0"
) -> Recreated:
    """Recreate a group that vanished, but only when its stream is empty or gone too.

    A group lost together with its stream (Redis restarted empty, the key expired) is safe to
    make again at `start_id`. A group gone from a stream that still has entries was destroyed
    (`XGROUP DESTROY`): recreating it at the start would deliver the whole stream again, through
    handlers too, so that is left to a person who knows where it should go on.
    """
    # Asked first: a group someone else recreated may have entries again since, and must not
    # be taken for a destroyed one.
    if await group_info(redis, stream, group) is not None:
        return Recreated.EXISTS
    if await redis.xlen(stream) > 0:
        return Recreated.REFUSED
    created = await ensure_group(redis, stream, group, start_id)
    return Recreated.CREATED if created else Recreated.EXISTS


def read_reply(response: Any, **_options: Any) -> list[tuple[str, list[Entry]]]:
    """An XREADGROUP reply as (stream, entries) pairs, entries as `parse_entries` makes them.

    Installed by `use_read_reply`: redis-py's own parsing builds a dict per entry, which
    `parse_entries` then wraps again; one pass costs a third of both (bench/README.md).
    """
    if not response:
        return []
    streams = response.items() if isinstance(response, dict) else response  # RESP3: a map
    read: list[tuple[str, list[Entry]]] = []
    for stream, raw in streams:
        entries: list[Entry] = []
        append = entries.append
        for entry_id, fields in raw:
            if not fields:  # an entry deleted while pending: nil
                append((entry_id.decode(), None))
            elif len(fields) == 2:  # the usual entry: one field
                append((entry_id.decode(), {fields[0]: fields[1]}))
            else:
                append((entry_id.decode(), dict(zip(fields[::2], fields[1::2], strict=True))))
        read.append((as_str(stream), entries))
    return read


def use_read_reply(client: Client) -> None:
    """Make `client.xreadgroup` return `read_reply`'s (stream, entries) pairs."""
    client.set_response_callback("XREADGROUP", read_reply)


def parse_entries(raw: Sequence[Any]) -> list[Entry]:
    """Entries from an XRANGE / XREADGROUP / XAUTOCLAIM reply; deleted ones keep None fields."""
    entries: list[Entry] = []
    for entry_id, fields in raw:
        entries.append((as_str(entry_id), fields or None))
    return entries


def _info_int(info: Mapping[Any, Any], key: str) -> int | None:
    value = info.get(key, info.get(key.encode()))
    if value is None:
        return None
    return int(value)


@dataclasses.dataclass(frozen=True)
class GroupInfo:
    """One consumer group as `XINFO GROUPS` reports it (Redis >= 7 for lag and entries-read)."""

    name: str
    consumers: int
    pending: int
    last_delivered_id: StreamId
    entries_read: int | None
    lag: int | None
    """None when Redis cannot compute it (after XDEL/XTRIM, or a group made at an arbitrary ID)."""

    @property
    def completed(self) -> int | None:
        """Entries delivered to the group and no longer pending (stored, dead-lettered or acked
        by the mover): the counter whose deltas are the service rate. None with entries-read."""
        if self.entries_read is None:
            return None
        return max(0, self.entries_read - self.pending)


@dataclasses.dataclass(frozen=True)
class ConsumerInfo:
    """One consumer as `XINFO CONSUMERS` reports it."""

    name: str
    pending: int
    idle_ms: int
    inactive_ms: int | None
    """Since the last successful read or claim (Redis >= 7.2); None on older servers."""


@dataclasses.dataclass(frozen=True)
class PendingEntry:
    """One entry of `XPENDING ... IDLE` extended form."""

    id: StreamId
    consumer: str
    idle_ms: int
    deliveries: int


def _as_dict(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return {as_str(k): v for k, v in raw.items()}
    it = iter(raw)
    return {as_str(k): v for k, v in zip(it, it, strict=True)}


async def group_infos(redis: Client, stream: str) -> list[GroupInfo]:
    """`XINFO GROUPS`; an empty list when the stream does not exist."""
    try:
        raw = await redis.execute_command("XINFO", "GROUPS", stream)
    except ResponseError as exc:
        if "no such key" in str(exc):
            return []
        raise
    groups = []
    for item in raw:
        info = _as_dict(item)
        groups.append(
            GroupInfo(
                name=as_str(info["name"]),
                consumers=int(info["consumers"]),
                pending=int(info["pending"]),
                last_delivered_id=as_str(info["last-delivered-id"]),
                entries_read=_info_int(info, "entries-read"),
                lag=_info_int(info, "lag"),
            )
        )
    return groups


async def group_info(redis: Client, stream: str, group: str) -> GroupInfo | None:
    """The group's `XINFO GROUPS` row, or None when the stream or the group is missing."""
    for info in await group_infos(redis, stream):
        if info.name == group:
            return info
    return None


async def consumer_infos(redis: Client, stream: str, group: str) -> list[ConsumerInfo]:
    """`XINFO CONSUMERS`."""
    raw = await redis.execute_command("XINFO", "CONSUMERS", stream, group)
    consumers = []
    for item in raw:
        info = _as_dict(item)
        consumers.append(
            ConsumerInfo(
                name=as_str(info["name"]),
                pending=int(info["pending"]),
                idle_ms=int(info["idle"]),
                inactive_ms=_info_int(info, "inactive"),
            )
        )
    return consumers


async def pending_entries(
    redis: Client,
    stream: str,
    group: str,
    *,
    count: int,
    min_idle_ms: int = 0,
    start: StreamId = "-",
    end: StreamId = "+",
    consumer: str | None = None,
) -> list[PendingEntry]:
    """`XPENDING key group [IDLE ms] start end count [consumer]`, oldest first."""
    raw: list[dict[str, Any]] = await redis.xpending_range(
        stream, group, start, end, count, consumername=consumer, idle=min_idle_ms or None
    )
    return [
        PendingEntry(
            as_str(item["message_id"]),
            as_str(item["consumer"]),
            int(item["time_since_delivered"]),
            int(item["times_delivered"]),
        )
        for item in raw
    ]


def now_millis() -> int:
    """Wall-clock milliseconds, the clock stream entry IDs are made with."""
    return time.time_ns() // 1_000_000


def by_slot(streams: Sequence[str]) -> list[list[str]]:
    """`streams` grouped by Redis Cluster hash slot, in their order: one XREADGROUP each.

    Redis Cluster runs a multi-key command only within one slot, so a consumer reads each
    slot's streams on their own (on a single Redis, one XREADGROUP reads them all).
    """
    groups: dict[int, list[str]] = {}
    for stream in streams:
        groups.setdefault(key_slot(stream.encode()), []).append(stream)
    return list(groups.values())
