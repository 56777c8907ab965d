"""Atomic moves to the dead-letter stream, and the other small Lua scripts the components share.

A dead-lettered entry is copied to the dead-letter stream and acked on its own stream in one Lua
script, so it is never in both places nor in neither. The script first checks that the entry is
still pending and has been idle for at least `min_idle_ms`: an entry a live consumer has just
taken, or that another mover already handled, is skipped. That makes every move idempotent, and
safe to run from an operator that restarts in the middle of it.

The operator also passes a counter hash (`counter_key`): the same script counts each move in it
by reason, so the count survives a kill at any point and always equals the moves made.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from streamscale.core import constants
from streamscale.core.streams import Client, Fields, StreamId, same_slot

MOVE_SCRIPT = """
-- KEYS: stream, dead-letter stream, optionally a counter hash (reason -> entries moved)
-- ARGV: group, min_idle_ms, dead_lettered_at, maxlen (0: none), then (id, reason, error) triples
local stream, dlq, counts = KEYS[1], KEYS[2], KEYS[3]
local group, min_idle, at, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local skip = {}
for _, name in ipairs({%(x_fields)s}) do skip[name] = true end
local moved, deleted, skipped = 0, 0, 0
for i = 5, #ARGV, 3 do
  local id, reason, err = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local p = redis.call('XPENDING', stream, group, 'IDLE', min_idle, id, id, 1)
  if #p == 0 then
    skipped = skipped + 1
  else
    local entry = redis.call('XRANGE', stream, id, id)
    local args = {dlq}
    if maxlen > 0 then
      table.insert(args, 'MAXLEN'); table.insert(args, '~'); table.insert(args, maxlen)
    end
    table.insert(args, '*')
    if #entry == 0 then
      reason = 'deleted'
      deleted = deleted + 1
    else
      local fields = entry[1][2]
      for j = 1, #fields, 2 do
        if not skip[fields[j]] then
          table.insert(args, fields[j]); table.insert(args, fields[j + 1])
        end
      end
      moved = moved + 1
    end
    for _, kv in ipairs({
        {'%(x_original_id)s', id}, {'%(x_stream)s', stream}, {'%(x_group)s', group},
        {'%(x_consumer)s', p[1][2]}, {'%(x_deliveries)s', tostring(p[1][4])},
        {'%(x_reason)s', reason}, {'%(x_error)s', err}, {'%(x_at)s', at}}) do
      table.insert(args, kv[1]); table.insert(args, kv[2])
    end
    redis.call('XADD', unpack(args))
    redis.call('XACK', stream, group, id)
    if counts then redis.call('HINCRBY', counts, reason, 1) end
  end
end
return {moved, deleted, skipped}
""" % {
    "x_fields": ", ".join(f"'{name}'" for name in constants.DEAD_LETTER_FIELDS),
    "x_original_id": constants.X_ORIGINAL_ID,
    "x_stream": constants.X_STREAM,
    "x_group": constants.X_GROUP,
    "x_consumer": constants.X_CONSUMER,
    "x_deliveries": constants.X_DELIVERIES,
    "x_reason": constants.X_REASON,
    "x_error": constants.X_ERROR,
    "x_at": constants.X_DEAD_LETTERED_AT,
}

TOUCH_SCRIPT = """
-- Reset the idle time of entries this consumer still owns (a lease renewal for slow batches),
-- without raising their delivery count and without taking back entries someone else claimed.
-- KEYS: stream; ARGV: group, consumer, ids...
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"""

LEAVE_SCRIPT = """
-- Delete a consumer from its group only when it has nothing pending: XGROUP DELCONSUMER
-- discards a consumer's pending entries, so this check and the delete must be one step.
-- KEYS: stream; ARGV: group, consumer. Returns the consumer's pending count (0: deleted).
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if not ok then return -1 end
if #p > 0 then
  local summary = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
  for _, c in ipairs(summary) do
    if c[2] == ARGV[2] then return c[4] end
  end
  return #p
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 0
"""

COUNTER_SUFFIX = ":count:"
"""`<dead-letter stream>:count:<stream>:<group>`: entries the operator moved, by reason."""

MOVE_CHUNK = 1000
"""Entries per script call: large enough to amortise the round trip, small enough that one
call never blocks Redis for long (about a millisecond)."""


@dataclasses.dataclass
class MoveResult:
    """What one or more moves did."""

    moved: int = 0
    deleted: int = 0
    """Entries that were pending but gone from the stream: recorded with reason `deleted`."""
    skipped: int = 0
    """No longer pending, or not idle enough: someone else has them."""

    def __iadd__(self, other: MoveResult) -> MoveResult:
        self.moved += other.moved
        self.deleted += other.deleted
        self.skipped += other.skipped
        return self

    @property
    def dead_lettered(self) -> int:
        """Entries that reached the dead-letter stream in this move."""
        return self.moved + self.deleted


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One entry to dead-letter: its ID, the reason (`x-reason`) and the error text."""

    id: StreamId
    reason: str
    error: str = ""


def counter_key(dead_letter_stream: str, stream: str, group: str) -> str:
    """The counter hash of one StreamConsumer's moves.

    It starts with the dead-letter stream's name, so it has the same hash tag (`{...}`) and lives
    in the same Redis Cluster slot as the stream the script writes to.
    """
    return f"{dead_letter_stream}{COUNTER_SUFFIX}{stream}:{group}"


def hash_tag(key: str) -> str | None:
    """The part of `key` Redis Cluster hashes when it is not the whole key (`{orders}` -> orders).

    Redis' rule: the text between the first `{` and the first `}` after it, if not empty.
    """
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    return key[start + 1 : end] if end > start + 1 else None


def cluster_names_problem(stream: str, dead_letter_stream: str, group: str) -> str | None:
    """Why these names cannot work on a Redis Cluster, naming the ones to use; None if they can.

    The move script writes the stream, its dead-letter stream and the counter hash
    (`counter_key`) in one atomic step, which Redis Cluster allows only within one hash slot:
    with names in different slots the first poison message would fail with CROSSSLOT.
    """
    counter = counter_key(dead_letter_stream, stream, group)
    if same_slot(stream, dead_letter_stream, counter):
        return None
    # Appending to a key that has a hash tag keeps the tag: `{orders}:dlq` and its counter
    # `{orders}:dlq:count:...` hash like `{orders}`.
    tagged = stream if hash_tag(stream) is not None else "{" + stream + "}"
    dlq = tagged + constants.DEAD_LETTER_SUFFIX
    rename = f"stream {tagged!r} and dead-letter stream {dlq!r}"
    if tagged == stream:
        rename = f"dead-letter stream {dlq!r} (the default for stream {stream!r})"
    return (
        f"on Redis Cluster, stream {stream!r} and its dead-letter stream {dead_letter_stream!r}"
        " (with its counter hash) are in different hash slots, so dead-lettering would fail"
        f" with CROSSSLOT. Give them one hash tag: use {rename}"
    )


def cluster_problem(
    streams: Sequence[str], dead_letter_for: Callable[[str], str], group: str
) -> str | None:
    """Why one consumer group cannot use `streams` on a Redis Cluster, or None if it can.

    Each stream's own names must share a slot (`cluster_names_problem`); the streams themselves
    may live in different slots (the shards of a logical stream do, on purpose): the consumer
    then reads each slot's streams with XREADGROUPs of their own (`streams.by_slot`).
    """
    problems = [
        problem
        for stream in streams
        if (problem := cluster_names_problem(stream, dead_letter_for(stream), group)) is not None
    ]
    return "; ".join(problems) or None


async def read_counts(redis: Client, key: str) -> dict[str, int]:
    """The counter hash as {reason: entries moved} (empty when nothing was ever moved)."""
    raw = await redis.hgetall(key)
    return {
        (name.decode() if isinstance(name, bytes) else str(name)): int(value)
        for name, value in raw.items()
    }


def utc_now_iso() -> str:
    """The `x-dead-lettered-at` value: ISO 8601, UTC, milliseconds."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class Scripts:
    """The Lua scripts, registered once per Redis client (EVALSHA with an EVAL fallback)."""

    def __init__(self, redis: Client) -> None:
        self.redis = redis
        self._move = redis.register_script(MOVE_SCRIPT)
        self._touch = redis.register_script(TOUCH_SCRIPT)
        self._leave = redis.register_script(LEAVE_SCRIPT)

    async def dead_letter(
        self,
        stream: str,
        dead_letter_stream: str,
        group: str,
        items: Iterable[DeadLetter],
        *,
        min_idle_ms: int = 0,
        maxlen: int = 0,
        counter: str | None = None,
    ) -> MoveResult:
        """Move pending entries to the dead-letter stream and ack them, atomically per chunk.

        With `counter` (see `counter_key`), each move also counts in that hash, in the same step.
        """
        result = MoveResult()
        batch: list[DeadLetter] = []
        for item in items:
            batch.append(item)
            if len(batch) >= MOVE_CHUNK:
                result += await self._move_chunk(
                    stream, dead_letter_stream, group, batch, min_idle_ms, maxlen, counter
                )
                batch = []
        if batch:
            result += await self._move_chunk(
                stream, dead_letter_stream, group, batch, min_idle_ms, maxlen, counter
            )
        return result

    async def _move_chunk(
        self,
        stream: str,
        dead_letter_stream: str,
        group: str,
        items: Sequence[DeadLetter],
        min_idle_ms: int,
        maxlen: int,
        counter: str | None,
    ) -> MoveResult:
        args: list[Any] = [group, min_idle_ms, utc_now_iso(), maxlen]
        for item in items:
            args += [item.id, item.reason, item.error[:2000]]
        keys = [stream, dead_letter_stream, *([counter] if counter else [])]
        moved, deleted, skipped = await self._move(keys=keys, args=args)
        return MoveResult(int(moved), int(deleted), int(skipped))

    async def record_deleted(
        self, stream: str, dead_letter_stream: str, group: str, consumer: str, ids: Sequence[str]
    ) -> int:
        """Record entries XAUTOCLAIM found deleted (already gone from the pending list)."""
        if not ids:
            return 0
        at = utc_now_iso()
        async with self.redis.pipeline(transaction=True) as pipe:
            for entry_id in ids:
                fields: Fields = {
                    constants.X_ORIGINAL_ID.encode(): entry_id.encode(),
                    constants.X_STREAM.encode(): stream.encode(),
                    constants.X_GROUP.encode(): group.encode(),
                    constants.X_CONSUMER.encode(): consumer.encode(),
                    constants.X_DELIVERIES.encode(): b"",
                    constants.X_REASON.encode(): constants.REASON_DELETED.encode(),
                    constants.X_ERROR.encode(): b"entry deleted from the stream while pending",
                    constants.X_DEAD_LETTERED_AT.encode(): at.encode(),
                }
                pipe.xadd(dead_letter_stream, fields)  # type: ignore[arg-type]
            await pipe.execute()
        return len(ids)

    async def touch(self, stream: str, group: str, consumer: str, ids: Sequence[str]) -> int:
        """Renew this consumer's lease on `ids` (reset their idle time); returns how many."""
        if not ids:
            return 0
        return int(await self._touch(keys=[stream], args=[group, consumer, *ids]))

    async def leave(self, stream: str, group: str, consumer: str) -> int:
        """Delete `consumer` from `group` if its pending list is empty; returns its pending count.

        -1 means the stream or the group does not exist (nothing to leave).
        """
        return int(await self._leave(keys=[stream], args=[group, consumer]))
