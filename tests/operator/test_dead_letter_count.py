"""status.deadLettered is cumulative for real: `streamscale operate` processes killed with
SIGKILL at random points during moves lose no count (issue 14.1)."""

from __future__ import annotations

import asyncio
import pathlib
import random
import signal
import subprocess
from collections.abc import Callable

import kmock
import redis.asyncio as aioredis

from tests.support import kube as h
from tests.support.servers import RedisServer

TOTAL = 40_000
KILLS = 5


async def test_dead_lettered_equals_the_dead_letter_stream_across_kill_9(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
    tmp_path: pathlib.Path,
) -> None:
    stream, group = names("orders"), "writers"
    dlq = stream + ":dlq"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(TOTAL):
            pipe.xadd(stream, {"n": str(n)})
        await pipe.execute()
    await redis.xreadgroup(group, "orders-gone", {stream: ">"}, count=TOTAL)
    h.declare_resources(kmock)
    kmock.objects[h.STC, h.NAMESPACE, "orders"] = h.stream_consumer(
        "orders",
        {
            "stream": stream,
            "group": group,
            "redis": {"url": redis_server.url},
            "database": h.DATABASE,
            "consumer": {"image": "streamscale:test"},
            "scaling": {"maxReplicas": 1, "pollSeconds": 0.2},
            "deadLetter": {"maxDeliveries": 3, "idleSeconds": 1},
        },
    )
    env = h.operator_env(
        kmock,
        redis_server.url,
        tmp_path,
        move_min_idle_seconds="0.2",
        gone_idle_seconds="0.2",
        # Five pages of 1000 per poll: several polls, so the kills land both inside a pass and
        # between a pass and its status write.
        max_move_pages="5",
    )
    log = tmp_path / "operator.log"
    rng = random.Random(14)
    kills: list[int] = []
    for _ in range(KILLS):
        before = await redis.xlen(dlq)
        if before == TOTAL:
            break
        proc = h.start_operator(env, tmp_path, log)
        try:
            await h.eventually(
                lambda before=before, proc=proc: _grew(redis, dlq, before, proc),
                timeout=60,
                interval=0.01,
            )
            await asyncio.sleep(rng.uniform(0, 0.15))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        kills.append(await redis.xlen(dlq))
    assert kills and kills[0] > 0, log.read_text(errors="replace")[-3000:]

    proc = h.start_operator(env, tmp_path, log)
    try:
        await h.eventually(lambda: _moved_all(redis, stream, group, dlq), timeout=60)
        # Polls go on every 0.2 s: the status catches up at once, or never does.
        await h.eventually(lambda: h.status(kmock, "orders").get("deadLettered") == TOTAL, 5)
    finally:
        proc.kill()
        proc.wait(10)
    during = [n for n in kills if 0 < n < TOTAL]
    assert len(during) >= 3, f"too few kills landed during the moves: {kills}"
    assert h.status(kmock, "orders")["deadLettered"] == await redis.xlen(dlq)


async def _moved_all(redis: aioredis.Redis, stream: str, group: str, dlq: str) -> bool:
    pending = (await redis.xpending(stream, group))["pending"]
    return pending == 0 and int(await redis.xlen(dlq)) == TOTAL


async def _grew(
    redis: aioredis.Redis, dlq: str, before: int, proc: subprocess.Popen[bytes]
) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the operator exited with {proc.returncode}")
    return int(await redis.xlen(dlq)) > before
