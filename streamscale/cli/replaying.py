"""`streamscale dlq`: list, show, replay and purge dead-letter entries.

Replay re-adds an entry's original fields (without the `x-*` dead-letter fields) to its source
stream, with `x-replayed-from` = the dead-letter entry's ID, so the consumers see it again as a
new entry. One Lua script per chunk does the XADD, removes the dead-letter entry (XDEL) and
records `dead-letter ID -> new ID` in the hash `<dead-letter stream>:replayed`, all in one atomic
step. Hence:

- an entry is replayed at most once, even by two people replaying at the same time: the second
  is told it was already replayed, and as which new entry;
- an entry is never lost between the two streams: either it is still dead-lettered, or it is
  back in its stream with a pointer to where it came from;
- if the replayed entry fails again it is dead-lettered again as a new entry (its
  `x-replayed-from` shows the history), and can be replayed again from there.

Entries recorded with reason `deleted` have no original fields left (the entry was gone from its
stream before it was dead-lettered): they cannot be replayed, only purged.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Iterable, Sequence
from typing import Any

from streamscale.core import constants
from streamscale.core.errors import ConfigError
from streamscale.core.streams import Client, as_str, id_key, is_cluster, same_slot

REPLAYED_SUFFIX = ":replayed"
"""The hash of replayed dead-letter IDs (to their new IDs): `<dead-letter stream>:replayed`."""
CHUNK = 500
"""Entries per script call or XRANGE page."""

STATUS_REPLAYED = "replayed"
STATUS_ALREADY = "already-replayed"
STATUS_MISSING = "not-found"
STATUS_EMPTY = "nothing-to-replay"
STATUS_NO_TARGET = "no-source-stream"

REPLAY_SCRIPT = string.Template("""
-- KEYS: dead-letter stream, target stream, replayed hash; ARGV: dead-letter entry IDs.
-- Returns a flat list of (id, status, new id) triples.
local skip = {}
for _, name in ipairs({$x_fields}) do skip[name] = true end
local out = {}
for _, id in ipairs(ARGV) do
  local done = redis.call('HGET', KEYS[3], id)
  local entry = redis.call('XRANGE', KEYS[1], id, id)
  if done then
    table.insert(out, id); table.insert(out, '$already'); table.insert(out, done)
  elseif #entry == 0 then
    table.insert(out, id); table.insert(out, '$missing'); table.insert(out, '')
  else
    local fields = entry[1][2]
    local args = {KEYS[2], '*'}
    for j = 1, #fields, 2 do
      if not skip[fields[j]] then
        table.insert(args, fields[j]); table.insert(args, fields[j + 1])
      end
    end
    if #args == 2 then
      table.insert(out, id); table.insert(out, '$empty'); table.insert(out, '')
    else
      table.insert(args, '$replayed_from'); table.insert(args, id)
      local new_id = redis.call('XADD', unpack(args))
      redis.call('XDEL', KEYS[1], id)
      redis.call('HSET', KEYS[3], id, new_id)
      table.insert(out, id); table.insert(out, '$replayed'); table.insert(out, new_id)
    end
  end
end
return out
""").substitute(
    x_fields=", ".join(
        f"'{name}'" for name in (*constants.DEAD_LETTER_FIELDS, constants.X_REPLAYED_FROM)
    ),
    already=STATUS_ALREADY,
    missing=STATUS_MISSING,
    empty=STATUS_EMPTY,
    replayed=STATUS_REPLAYED,
    replayed_from=constants.X_REPLAYED_FROM,
)


def dead_letter_name(stream: str | None, dead_letter_stream: str | None) -> str:
    """The dead-letter stream: given explicitly, else `<stream>:dlq`."""
    if dead_letter_stream:
        return dead_letter_stream
    if not stream:
        raise ValueError("name the stream (--stream / STREAMSCALE_STREAM) or --dead-letter-stream")
    return stream + constants.DEAD_LETTER_SUFFIX


@dataclasses.dataclass(frozen=True)
class DeadEntry:
    """One dead-letter entry, its fields decoded as text."""

    id: str
    fields: dict[str, str]

    def get(self, name: str) -> str:
        return self.fields.get(name, "")

    @property
    def reason(self) -> str:
        return self.get(constants.X_REASON)

    @property
    def original(self) -> dict[str, str]:
        """The fields of the original entry."""
        hidden = {*constants.DEAD_LETTER_FIELDS, constants.X_REPLAYED_FROM}
        return {k: v for k, v in self.fields.items() if k not in hidden}

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "fields": self.fields}


def _decode(entry_id: Any, raw: Any) -> DeadEntry:
    fields = {
        as_str(k) if isinstance(k, str) else k.decode("utf-8", "replace"): (
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        )
        for k, v in (raw or {}).items()
    }
    return DeadEntry(as_str(entry_id), fields)


async def entries(
    redis: Client,
    dead_letter_stream: str,
    *,
    reasons: Iterable[str] = (),
    limit: int | None = None,
) -> list[DeadEntry]:
    """Dead-letter entries, oldest first, with one of `reasons` (any when empty), up to `limit`."""
    wanted = set(reasons)
    found: list[DeadEntry] = []
    start = "-"
    while limit is None or len(found) < limit:
        page = await redis.xrange(dead_letter_stream, min=start, max="+", count=CHUNK) or []
        for entry_id, fields in page:
            entry = _decode(entry_id, fields)
            if not wanted or entry.reason in wanted:
                found.append(entry)
                if limit is not None and len(found) >= limit:
                    break
        if len(page) < CHUNK:
            break
        start = "(" + as_str(page[-1][0])
    return found


async def get(redis: Client, dead_letter_stream: str, entry_id: str) -> DeadEntry | None:
    """One dead-letter entry by ID."""
    page = await redis.xrange(dead_letter_stream, min=entry_id, max=entry_id, count=1)
    return _decode(*page[0]) if page else None


@dataclasses.dataclass(frozen=True)
class Replayed:
    """What became of one dead-letter entry asked to be replayed."""

    id: str
    status: str
    new_id: str = ""
    stream: str = ""


async def replay(
    redis: Client,
    dead_letter_stream: str,
    ids: Sequence[str],
    *,
    to: str | None = None,
) -> list[Replayed]:
    """Replay `ids` to their source streams (or all to `to`), each at most once, atomically."""
    ids = list(dict.fromkeys(ids))
    script = redis.register_script(REPLAY_SCRIPT)
    replayed_key = dead_letter_stream + REPLAYED_SUFFIX
    by_target: dict[str, list[str]] = {}
    results: dict[str, Replayed] = {}
    for chunk_start in range(0, len(ids), CHUNK):
        chunk = ids[chunk_start : chunk_start + CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id in chunk:
                pipe.xrange(dead_letter_stream, min=entry_id, max=entry_id, count=1)
            pages = await pipe.execute()
        for entry_id, page in zip(chunk, pages, strict=True):
            target = to or (_decode(*page[0]).get(constants.X_STREAM) if page else "")
            if page and not target:
                results[entry_id] = Replayed(entry_id, STATUS_NO_TARGET)
            else:
                # A missing entry still goes through the script: it says whether it was replayed.
                by_target.setdefault(target or dead_letter_stream, []).append(entry_id)
    for target, target_ids in by_target.items():
        if is_cluster(redis) and not same_slot(dead_letter_stream, target, replayed_key):
            raise ConfigError(
                f"on Redis Cluster, stream {target!r} is in another hash slot than dead-letter"
                f" stream {dead_letter_stream!r}, so no entry can move between them in one"
                " atomic step; nothing was replayed. Name them with one hash tag (`{orders}`"
                " and `{orders}:dlq`), or replay with --to into a stream with the dead-letter"
                " stream's tag"
            )
        for chunk_start in range(0, len(target_ids), CHUNK):
            chunk = target_ids[chunk_start : chunk_start + CHUNK]
            raw = await script(keys=[dead_letter_stream, target, replayed_key], args=chunk)
            for i in range(0, len(raw), 3):
                entry_id, status, new_id = (as_str(x) for x in raw[i : i + 3])
                stream = target if status == STATUS_REPLAYED else ""
                results[entry_id] = Replayed(entry_id, status, new_id, stream)
    return [results[entry_id] for entry_id in ids]


async def purge(redis: Client, dead_letter_stream: str, ids: Sequence[str]) -> int:
    """Delete the given dead-letter entries; returns how many existed."""
    deleted = 0
    for chunk_start in range(0, len(ids), CHUNK):
        deleted += int(
            await redis.xdel(dead_letter_stream, *ids[chunk_start : chunk_start + CHUNK])
        )
    return deleted


async def purge_all(redis: Client, dead_letter_stream: str) -> int:
    """Delete the whole dead-letter stream and its replay record; returns the entries it had."""
    replayed_key = dead_letter_stream + REPLAYED_SUFFIX
    # On Redis Cluster a transaction must keep to one hash slot: a dead-letter stream without
    # a hash tag has its replay record elsewhere, and is deleted first (DEL is atomic per key).
    atomic = not is_cluster(redis) or same_slot(dead_letter_stream, replayed_key)
    async with redis.pipeline(transaction=atomic) as pipe:
        pipe.xlen(dead_letter_stream)
        if atomic:
            pipe.delete(dead_letter_stream, replayed_key)
        else:
            pipe.delete(dead_letter_stream)
            pipe.delete(replayed_key)
        length, *_ = await pipe.execute()
    return int(length)


def sort_ids(ids: Iterable[str]) -> list[str]:
    """Entry IDs in stream order, without duplicates."""
    return sorted(set(ids), key=id_key)
