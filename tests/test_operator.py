"""The operator end to end: kopf in-process, kmock's Kubernetes emulator, a real redis-server."""

from __future__ import annotations

from collections.abc import Callable

import kmock
import redis.asyncio as aioredis

from tests.operator import harness as h
from tests.servers import RedisServer


def spec(stream: str, group: str, url: str, **scaling: object) -> dict[str, object]:
    return {
        "stream": stream,
        "group": group,
        "redis": {"url": url},
        "consumer": {"image": "streamscale:test"},
        "scaling": {
            "minReplicas": 0,
            "maxReplicas": 5,
            "backlogPerReplica": 10,
            "pollSeconds": 0.2,
            "scaleDownStabilizationSeconds": 1,
            **scaling,
        },
        "deadLetter": {"maxDeliveries": 3, "idleSeconds": 60},
    }


async def test_scales_up_within_a_poll_and_down_after_the_window(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, group = names("orders"), "writers"
    h.declare_resources(kmock)
    kmock.objects[h.STC, h.NAMESPACE, "orders"] = h.stream_consumer(
        "orders", spec(stream, group, redis_server.url)
    )
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.replicas(kmock, "orders") == 0)
        deployment = h.obj(kmock, h.DEPLOYMENTS, "orders")
        assert deployment is not None
        for n in range(35):
            await redis.xadd(stream, {"n": str(n)})
        await h.eventually(lambda: h.replicas(kmock, "orders") == 4, timeout=1.0)
        await h.eventually(lambda: h.status(kmock, "orders").get("lag") == 35, timeout=1.0)
        assert h.status(kmock, "orders")["desiredReplicas"] == 4
        assert h.condition(kmock, "orders", "Ready") == "True"
        await redis.xreadgroup(group, "orders-abc", {stream: ">"}, count=100)
        ids = [entry_id for entry_id, _ in (await redis.xrange(stream))]
        await redis.xack(stream, group, *ids)
        await h.eventually(lambda: h.replicas(kmock, "orders") == 0, timeout=5.0)
        assert h.events(kmock, "ScaledUp") and h.events(kmock, "ScaledDown")
