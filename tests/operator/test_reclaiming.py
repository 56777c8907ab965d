"""The dead-letter mover and retention as plain functions against a real Redis (no Kubernetes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import redis.asyncio as aioredis

from streamscale.core.deadletter import DeadLetter, MoveResult, Scripts, counter_key, read_counts
from streamscale.core.streams import consumer_infos
from streamscale.operator.reclaiming import Rules, move_stranded, reclaim
from streamscale.operator.retention import safe_min_id, trim
from streamscale.operator.specs import Retention

RULES = Rules(max_deliveries=3, idle_ms=60_000, min_idle_ms=50, gone_idle_ms=50)


async def fill(redis: aioredis.Redis, stream: str, n: int) -> list[str]:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"n": str(i)})
        ids = await pipe.execute()
    return [i.decode() for i in ids]


async def originals(redis: aioredis.Redis, dlq: str) -> list[bytes]:
    return [fields[b"x-original-id"] for _, fields in await redis.xrange(dlq)]


async def test_a_gone_consumers_entries_move_and_it_leaves(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    stream, group = names("s"), "g"
    dlq = stream + ":dlq"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    await fill(redis, stream, 2500)
    await redis.xreadgroup(group, "pod-a", {stream: ">"}, count=2000)
    await asyncio.sleep(0.1)
    await redis.xreadgroup(group, "pod-b-1", {stream: ">"}, count=500)  # live and fresh
    consumers = await consumer_infos(redis, stream, group)
    result = await reclaim(
        Scripts(redis), stream, group, dlq, consumers=consumers, pods={"pod-b"}, rules=RULES
    )
    assert result.dead_lettered == {"idle": 2000} and result.removed == ["pod-a"]
    assert result.complete
    assert len(set(await originals(redis, dlq))) == 2000
    assert {c.name for c in await consumer_infos(redis, stream, group)} == {"pod-b-1"}
    assert (await redis.xpending(stream, group))["pending"] == 500


async def test_a_gone_consumers_fresh_entries_are_left_for_live_consumers_to_claim(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    """A vanished pod may have stored its batch without acking it: claiming (and the idempotent
    write) gets that right; dead-lettering it would put the message in both places."""
    stream, group = names("s"), "g"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    await fill(redis, stream, 10)
    await redis.xreadgroup(group, "pod-a", {stream: ">"}, count=10)
    await asyncio.sleep(0.1)
    consumers = await consumer_infos(redis, stream, group)
    rules = Rules(max_deliveries=3, idle_ms=60_000, min_idle_ms=50, gone_idle_ms=30_000)
    result = await reclaim(
        Scripts(redis), stream, group, stream + ":dlq", consumers=consumers, pods=set(), rules=rules
    )
    assert result.total == 0 and result.removed == []
    assert (await redis.xpending(stream, group))["pending"] == 10


async def test_a_consumer_with_pending_entries_is_never_removed(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    stream, group = names("s"), "g"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    await fill(redis, stream, 3)
    await redis.xreadgroup(group, "pod-a", {stream: ">"}, count=3)
    consumers = await consumer_infos(redis, stream, group)
    slow = Rules(max_deliveries=3, idle_ms=60_000, min_idle_ms=60_000)
    result = await reclaim(
        Scripts(redis), stream, group, stream + ":dlq", consumers=consumers, pods=set(), rules=slow
    )
    assert result.total == 0 and result.removed == []
    assert [c.name for c in await consumer_infos(redis, stream, group)] == ["pod-a"]
    unknown = await reclaim(
        Scripts(redis), stream, group, stream + ":dlq", consumers=consumers, pods=None, rules=RULES
    )
    assert unknown.total == 0 and unknown.removed == [], "no pod list: nobody counts as gone"


class Crashing(Scripts):
    """Dies (like an operator killed) after the first chunk reached Redis."""

    calls = 0

    async def dead_letter(
        self, stream: str, dead_letter_stream: str, group: str, items: Iterable[DeadLetter],
        **kwargs: Any,
    ) -> MoveResult:  # fmt: skip
        self.calls += 1
        if self.calls > 1:
            raise ConnectionError("operator killed")
        return await super().dead_letter(stream, dead_letter_stream, group, items, **kwargs)


async def test_a_move_interrupted_and_repeated_duplicates_nothing(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    stream, group = names("s"), "g"
    dlq = stream + ":dlq"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    ids = await fill(redis, stream, 5000)
    await redis.xreadgroup(group, "gone", {stream: ">"}, count=5000)
    await asyncio.sleep(0.1)
    counter = counter_key(dlq, stream, group)
    with pytest.raises(ConnectionError):
        await move_stranded(
            Crashing(redis), stream, group, dlq, gone={"gone"}, rules=RULES, max_pages=100,
            counter=counter,
        )  # fmt: skip
    assert await redis.xlen(dlq) == 1000
    assert await read_counts(redis, counter) == {"idle": 1000}, "the move counted what it did"
    # The same page again, as a restarted operator that never saw the reply would send it:
    again = await Scripts(redis).dead_letter(
        stream, dlq, group, [DeadLetter(i, "idle") for i in ids[:1000]], min_idle_ms=50,
        counter=counter,
    )  # fmt: skip
    assert again.skipped == 1000 and again.dead_lettered == 0
    result = await move_stranded(
        Scripts(redis), stream, group, dlq, gone={"gone"}, rules=RULES, max_pages=100,
        counter=counter,
    )  # fmt: skip
    assert result.total == 4000
    moved = await originals(redis, dlq)
    assert len(moved) == len(set(moved)) == 5000
    assert await read_counts(redis, counter) == {"idle": 5000}


async def test_the_page_budget_bounds_one_pass(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    stream, group = names("s"), "g"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    await fill(redis, stream, 3000)
    await redis.xreadgroup(group, "gone", {stream: ">"}, count=3000)
    await asyncio.sleep(0.1)
    result = await move_stranded(
        Scripts(redis), stream, group, stream + ":dlq", gone={"gone"}, rules=RULES, max_pages=2
    )
    assert result.total == 2000 and not result.complete


async def test_retention_never_trims_what_a_group_has_not_read_or_acked(
    redis: aioredis.Redis, names: Callable[[str], str]
) -> None:
    stream = names("s")
    ids = await fill(redis, stream, 100)
    await redis.xgroup_create(stream, "fast", id="0")
    await redis.xgroup_create(stream, "slow", id="0")
    await redis.xreadgroup("fast", "c", {stream: ">"}, count=90)
    await redis.xack(stream, "fast", *ids[:90])
    await redis.xreadgroup("slow", "c", {stream: ">"}, count=50)
    await redis.xack(stream, "slow", *ids[:40])  # 40..49 still pending on `slow`
    assert await safe_min_id(redis, stream) == ids[40]
    trimmed = await trim(redis, stream, Retention(max_age_seconds=None, min_id=ids[95]))
    assert trimmed == 40
    first = (await redis.xrange(stream, count=1))[0][0].decode()
    assert first == ids[40]
    assert await trim(redis, stream, Retention(max_age_seconds=3600)) == 0, "nothing that old"
