"""The operator end to end: kopf in-process, kmock's Kubernetes emulator, a real redis-server."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import kmock
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from tests.support import kube as h
from tests.support.servers import RedisServer


def spec(stream: str, group: str, url: str, **scaling: object) -> dict[str, object]:
    return {
        "stream": stream,
        "group": group,
        "redis": {"url": url},
        "database": h.DATABASE,
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


async def backlog(
    redis: aioredis.Redis, stream: str, group: str, count: int, **fields: str
) -> list[bytes]:
    """The group at the start of the stream and `count` entries after it (`n` numbers them,
    `fields` are added to each); their IDs."""
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.xadd(stream, {"n": str(n), **fields})
        ids: list[bytes] = await pipe.execute()
    return ids


async def test_scales_up_within_a_poll_and_down_after_the_window(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, group = names("orders"), "writers"
    h.declare(kmock, "orders", spec(stream, group, redis_server.url))
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
        await h.eventually(lambda: h.events(kmock, "ScaledUp") and h.events(kmock, "ScaledDown"))


async def test_null_lag_never_scales_to_zero_while_unread_entries_remain(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, group = names("orders"), "writers"
    ids = await backlog(redis, stream, group, 30)
    await redis.xreadgroup(group, "c1", {stream: ">"}, count=10)
    await redis.xack(stream, group, *ids[:10])
    await redis.xdel(stream, ids[20])  # a tombstone after the last-delivered-id: lag is NULL
    info = next(g for g in await redis.xinfo_groups(stream) if g["name"] == group.encode())
    assert info["lag"] is None
    h.declare(
        kmock, "orders", spec(stream, group, redis_server.url, scaleDownStabilizationSeconds=0)
    )
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.status(kmock, "orders").get("lagEstimated") is True)
        status = h.status(kmock, "orders")
        assert status["lag"] == 19
        assert h.replicas(kmock, "orders") == 2
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert "estimate" in ready["message"]
        for _ in range(10):  # several polls: the estimate keeps at least one replica
            await asyncio.sleep(0.1)
            assert (h.replicas(kmock, "orders") or 0) >= 1


async def test_entries_of_a_gone_consumer_are_dead_lettered_and_the_consumer_removed(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, group = names("orders"), "writers"
    dlq = stream + ":dlq"
    ids = await backlog(redis, stream, group, 12, data="{}")
    await redis.xreadgroup(group, "orders-gone", {stream: ">"}, count=5)
    await redis.xreadgroup(group, "orders-live-1", {stream: ">"}, count=3)
    await redis.xreadgroup(group, "orders-live", {stream: ">"}, count=1)
    # One entry of a live consumer has been delivered maxDeliveries (3) times already.
    await redis.xclaim(stream, group, "orders-live", 0, [ids[8]], retrycount=3)
    await redis.xgroup_createconsumer(stream, group, "orders-old")  # gone, nothing pending
    kmock.objects[h.PODS, h.NAMESPACE, "orders-live"] = h.pod("orders-live", "orders")
    kmock.objects[h.PODS, h.NAMESPACE, "orders-done"] = h.pod("orders-done", "orders", "Failed")
    h.declare(kmock, "orders", spec(stream, group, redis_server.url))
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.status(kmock, "orders").get("deadLettered") == 6)
        await h.eventually(lambda: h.events(kmock, "DeadLettered"))
        labels = {"namespace": h.NAMESPACE, "name": "orders"}
        metric = "streamscale_dead_lettered_total"
        assert REGISTRY.get_sample_value(metric, {**labels, "reason": "idle"}) == 5
        assert REGISTRY.get_sample_value(metric, {**labels, "reason": "max-deliveries"}) == 1
    dead = await redis.xrange(dlq)
    by_id = {fields[b"x-original-id"].decode(): fields for _, fields in dead}
    assert sorted(by_id) == sorted(i.decode() for i in [*ids[:5], ids[8]])
    gone = by_id[ids[0].decode()]
    assert gone[b"x-reason"] == b"idle"
    assert gone[b"x-consumer"] == b"orders-gone"
    assert gone[b"x-stream"] == stream.encode() and gone[b"x-group"] == group.encode()
    assert gone[b"x-deliveries"] == b"1" and gone[b"n"] == b"0"
    assert gone[b"x-dead-lettered-at"]
    assert by_id[ids[8].decode()][b"x-reason"] == b"max-deliveries"
    consumers = {c["name"].decode() for c in await redis.xinfo_consumers(stream, group)}
    assert consumers == {"orders-live", "orders-live-1"}
    pending = await redis.xpending(stream, group)
    assert pending["pending"] == 3, "the live consumers' fresh entries stay where they are"


async def test_an_operator_restarted_in_the_middle_of_a_move_duplicates_nothing(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, group = names("orders"), "writers"
    dlq = stream + ":dlq"
    total = 10_000
    await backlog(redis, stream, group, total)
    await redis.xreadgroup(group, "orders-gone", {stream: ">"}, count=total)
    h.declare(kmock, "orders", spec(stream, group, redis_server.url))
    settings = h.settings(redis_server.url, max_move_pages=2)
    async with h.running_operator(kmock, settings):
        await h.eventually(lambda: redis.xlen(dlq), interval=0.005)
    first = await redis.xlen(dlq)
    assert 0 < first < total, "stopped in the middle of the move"
    async with h.running_operator(kmock, settings):
        await h.eventually(lambda: h.status(kmock, "orders").get("consumers") == 0, timeout=10)
    dead = await redis.xrange(dlq)
    originals = [fields[b"x-original-id"] for _, fields in dead]
    assert len(originals) == len(set(originals)) == total
    assert (await redis.xpending(stream, group))["pending"] == 0


async def test_redis_down_degrades_with_an_event_and_recovers_by_itself(
    kmock: kmock.KubernetesEmulator, fresh_redis: RedisServer, names: Callable[[str], str]
) -> None:
    stream, group = names("orders"), "writers"
    h.declare(kmock, "orders", spec(stream, group, fresh_redis.url, minReplicas=1))
    async with h.running_operator(kmock, h.settings(fresh_redis.url)):
        await h.eventually(lambda: h.condition(kmock, "orders", "Ready") == "True")
        assert h.replicas(kmock, "orders") == 1
        fresh_redis.stop()
        await h.eventually(lambda: h.condition(kmock, "orders", "Degraded") == "True")
        assert h.condition(kmock, "orders", "Ready") == "False"
        await h.eventually(lambda: h.events(kmock, "RedisUnavailable"))
        assert h.replicas(kmock, "orders") == 1, "no scaling change while Redis is down"
        fresh_redis.start()
        await h.eventually(lambda: h.condition(kmock, "orders", "Ready") == "True", timeout=10)
        assert h.condition(kmock, "orders", "Degraded") == "False"
        await h.eventually(lambda: h.events(kmock, "Recovered"))


async def merge_patch(emulator: kmock.KubernetesEmulator, path: str, patch: dict[str, Any]) -> None:
    url = str(emulator.url).rstrip("/") + path
    headers = {"Content-Type": "application/merge-patch+json"}
    async with (
        aiohttp.ClientSession() as session,
        session.patch(url, data=json.dumps(patch), headers=headers) as response,
    ):
        assert response.status == 200, await response.text()


async def test_spec_changes_reach_the_deployment_and_metrics_are_labelled(
    kmock: kmock.KubernetesEmulator, redis_server: RedisServer, names: Callable[[str], str]
) -> None:
    stream, group = names("orders"), "writers"
    h.declare(kmock, "orders", spec(stream, group, redis_server.url, minReplicas=1))
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.replicas(kmock, "orders") == 1)
        await merge_patch(
            kmock, h.stc_path("orders"), {"spec": {"consumer": {"image": "streamscale:v2"}}}
        )

        def image() -> str:
            deployment = h.obj(kmock, h.DEPLOYMENTS, "orders") or {}
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            return str(container["image"])

        await h.eventually(lambda: image() == "streamscale:v2")
        assert h.replicas(kmock, "orders") == 1, "a template change keeps the operator's replicas"
        labels = {"namespace": h.NAMESPACE, "name": "orders"}
        await h.eventually(lambda: REGISTRY.get_sample_value("streamscale_replicas", labels) == 1)
        assert REGISTRY.get_sample_value("streamscale_group_lag", labels) == 0
        await h.eventually(
            lambda: REGISTRY.get_sample_value("streamscale_poll_seconds_count", labels)
        )


async def test_scale_target_ref_scales_an_existing_deployment_and_finds_its_pods(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, group = names("orders"), "writers"
    await backlog(redis, stream, group, 25)
    await redis.xreadgroup(group, "mine-pod-1", {stream: ">"}, count=2)
    await redis.xreadgroup(group, "mine-gone", {stream: ">"}, count=3)
    h.declare_resources(kmock)
    kmock.objects[h.DEPLOYMENTS, h.NAMESPACE, "mine"] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mine", "namespace": h.NAMESPACE, "resourceVersion": "1"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "mine"}}},
    }
    kmock.objects[h.PODS, h.NAMESPACE, "mine-pod"] = {
        "metadata": {"name": "mine-pod", "namespace": h.NAMESPACE, "labels": {"app": "mine"}},
        "status": {"phase": "Running"},
    }
    body = h.stream_consumer("orders", spec(stream, group, redis_server.url))
    del body["spec"]["consumer"]
    body["spec"]["scaleTargetRef"] = {"name": "mine"}
    kmock.objects[h.STC, h.NAMESPACE, "orders"] = body
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.replicas(kmock, "mine") == 3)  # 20 lag + 5 pending
        await h.eventually(lambda: h.status(kmock, "orders").get("deadLettered") == 3)
    assert h.obj(kmock, h.DEPLOYMENTS, "orders") is None, "nothing of its own with a target"
    consumers = {c["name"].decode() for c in await redis.xinfo_consumers(stream, group)}
    assert consumers == {"mine-pod-1"}


async def test_the_redis_url_comes_from_a_secret_by_reference(
    kmock: kmock.KubernetesEmulator, redis_server: RedisServer, names: Callable[[str], str]
) -> None:
    stream, group = names("orders"), "writers"
    h.declare_resources(kmock)
    kmock.objects[h.SECRETS, h.NAMESPACE, "redis"] = {
        "metadata": {"name": "redis", "namespace": h.NAMESPACE, "resourceVersion": "1"},
        "data": {"url": base64.b64encode(redis_server.url.encode()).decode()},
    }
    body = h.stream_consumer("orders", spec(stream, group, redis_server.url, minReplicas=1))
    body["spec"]["redis"] = {"urlSecretRef": {"name": "redis", "key": "url"}}
    kmock.objects[h.STC, h.NAMESPACE, "orders"] = body
    # The operator's own default URL points nowhere: only the Secret's URL can work.
    async with h.running_operator(kmock, h.settings("redis://127.0.0.1:1/0")):
        await h.eventually(lambda: h.condition(kmock, "orders", "Ready") == "True")
    deployment = h.obj(kmock, h.DEPLOYMENTS, "orders") or {}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["STREAMSCALE_REDIS_URL"] == {
        "name": "STREAMSCALE_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "redis", "key": "url"}},
    }
    assert redis_server.url not in json.dumps(deployment)


async def test_deleting_the_stream_consumer_releases_it_and_leaves_cleanup_to_the_owner_ref(
    kmock: kmock.KubernetesEmulator, redis_server: RedisServer, names: Callable[[str], str]
) -> None:
    stream, group = names("orders"), "writers"
    body = h.declare(kmock, "orders", spec(stream, group, redis_server.url))
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.status(kmock, "orders").get("conditions"))
        deployment = h.obj(kmock, h.DEPLOYMENTS, "orders") or {}
        (owner,) = deployment["metadata"]["ownerReferences"]
        assert owner["uid"] == body["metadata"]["uid"] and owner["blockOwnerDeletion"] is True
        url = str(kmock.url).rstrip("/") + h.stc_path("orders")
        async with aiohttp.ClientSession() as session, session.delete(url) as response:
            assert response.status == 200
        await h.eventually(lambda: h.obj(kmock, h.STC, "orders") is None)
        labels = {"namespace": h.NAMESPACE, "name": "orders"}
        await h.eventually(
            lambda: REGISTRY.get_sample_value("streamscale_replicas", labels) is None
        )


async def test_with_kopf_peering_the_operator_announces_itself_and_acts(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, group = names("orders"), "writers"
    kmock.resources["kopf.dev/v1/kopfpeerings"] = kmock.ResourceInfo(
        kind="KopfPeering", namespaced=True, verbs=h.VERBS
    )
    kmock.objects["kopf.dev/v1/kopfpeerings", h.NAMESPACE, "streamscale"] = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": "streamscale", "namespace": h.NAMESPACE, "resourceVersion": "1"},
    }
    h.declare(kmock, "orders", spec(stream, group, redis_server.url))
    settings = h.settings(redis_server.url, standalone=False, priority=10)
    async with h.running_operator(kmock, settings):
        for n in range(15):
            await redis.xadd(stream, {"n": str(n)})
        await h.eventually(lambda: h.replicas(kmock, "orders") == 2)
        peering = h.obj(kmock, "kopf.dev/v1/kopfpeerings", "streamscale") or {}
        peers = peering.get("status") or {}
        assert [peer["priority"] for peer in peers.values()] == [10]


async def test_a_pod_that_goes_away_later_is_noticed_within_the_cache_age(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, group = names("orders"), "writers"
    await backlog(redis, stream, group, 4)
    await redis.xreadgroup(group, "orders-a", {stream: ">"}, count=4)
    kmock.objects[h.PODS, h.NAMESPACE, "orders-a"] = h.pod("orders-a", "orders")
    h.declare(kmock, "orders", spec(stream, group, redis_server.url))
    settings = h.settings(redis_server.url, api_cache_seconds=0.5)
    async with h.running_operator(kmock, settings):
        await h.eventually(lambda: h.status(kmock, "orders").get("consumers") == 1)
        await asyncio.sleep(0.5)
        assert h.status(kmock, "orders").get("deadLettered", 0) == 0, "a live pod keeps its work"
        url = str(kmock.url).rstrip("/") + f"/api/v1/namespaces/{h.NAMESPACE}/pods/orders-a"
        async with aiohttp.ClientSession() as session, session.delete(url) as response:
            assert response.status == 200
        await h.eventually(lambda: h.status(kmock, "orders").get("deadLettered") == 4)
        await h.eventually(lambda: h.status(kmock, "orders").get("consumers") == 0)
    assert await redis.xlen(stream + ":dlq") == 4


async def test_idle_seconds_below_the_operators_floor_is_reported_and_the_floor_holds(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, group = names("orders"), "writers"
    await backlog(redis, stream, group, 1)
    await redis.xreadgroup(group, "orders-live", {stream: ">"}, count=1)
    kmock.objects[h.PODS, h.NAMESPACE, "orders-live"] = h.pod("orders-live", "orders")
    body = spec(stream, group, redis_server.url)
    body["deadLetter"] = {"maxDeliveries": 3, "idleSeconds": 1}
    h.declare(kmock, "orders", body)
    async with h.running_operator(kmock, h.settings(redis_server.url, move_min_idle_seconds=2)):
        await h.eventually(lambda: h.status(kmock, "orders").get("deadLetterIdleSeconds") == 2)
        ready = next(c for c in h.status(kmock, "orders")["conditions"] if c["type"] == "Ready")
        assert "STREAMSCALE_MOVE_MIN_IDLE_SECONDS=2" in ready["message"]
        await asyncio.sleep(1.2)  # past idleSeconds, within the floor: nothing moves yet
        assert await redis.xlen(stream + ":dlq") == 0
        await h.eventually(lambda: h.status(kmock, "orders").get("deadLettered") == 1, 5)


async def test_a_table_mode_stream_consumer_without_a_database_is_refused(
    kmock: kmock.KubernetesEmulator, redis_server: RedisServer, names: Callable[[str], str]
) -> None:
    body = spec(names("orders"), "writers", redis_server.url)
    del body["database"]
    h.declare(kmock, "orders", body)
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.condition(kmock, "orders", "Degraded") == "True")
        degraded = next(
            c for c in h.status(kmock, "orders")["conditions"] if c["type"] == "Degraded"
        )
        assert degraded["reason"] == "InvalidSpec"
        assert "spec.database.urlSecretRef" in degraded["message"]
        await h.eventually(lambda: h.events(kmock, "InvalidSpec"))
        assert h.obj(kmock, h.DEPLOYMENTS, "orders") is None


async def test_a_second_stream_into_the_same_model_table_is_refused(
    kmock: kmock.KubernetesEmulator, redis_server: RedisServer, names: Callable[[str], str]
) -> None:
    h.declare_resources(kmock)
    first = spec(names("orders"), "writers", redis_server.url)
    second = spec(names("orders-eu"), "writers", redis_server.url)
    for body in (first, second):
        body["model"] = "myapp.models:Order"
    kmock.objects[h.STC, h.NAMESPACE, "orders"] = h.stream_consumer("orders", first)
    newer = h.stream_consumer("orders-eu", second)
    newer["metadata"]["creationTimestamp"] = "2026-01-02T00:00:00Z"
    kmock.objects[h.STC, h.NAMESPACE, "orders-eu"] = newer
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.condition(kmock, "orders-eu", "Degraded") == "True")
        degraded = next(
            c for c in h.status(kmock, "orders-eu")["conditions"] if c["type"] == "Degraded"
        )
        assert degraded["reason"] == "ModelConflict"
        assert "already fed by StreamConsumer orders" in degraded["message"]
        await h.eventually(lambda: h.events(kmock, "ModelConflict"))
        await h.eventually(lambda: h.condition(kmock, "orders", "Ready") == "True")
        assert h.obj(kmock, h.DEPLOYMENTS, "orders") is not None
        assert h.obj(kmock, h.DEPLOYMENTS, "orders-eu") is None


async def test_without_any_redis_the_stream_consumer_says_no_redis_configured(
    kmock: kmock.KubernetesEmulator, redis_server: RedisServer, names: Callable[[str], str]
) -> None:
    body = spec(names("orders"), "writers", redis_server.url)
    del body["redis"]
    h.declare(kmock, "orders", body)
    async with h.running_operator(kmock, h.settings(None)):
        await h.eventually(lambda: h.condition(kmock, "orders", "Degraded") == "True")
        degraded = next(
            c for c in h.status(kmock, "orders")["conditions"] if c["type"] == "Degraded"
        )
        assert degraded["reason"] == "NoRedisConfigured"
        assert degraded["message"].startswith("no Redis configured")
        assert "127.0.0.1" not in degraded["message"]
        await h.eventually(lambda: h.events(kmock, "NoRedisConfigured"))


async def test_with_an_operator_label_it_acts_only_on_its_own_stream_consumers(
    kmock: kmock.KubernetesEmulator, redis_server: RedisServer, names: Callable[[str], str]
) -> None:
    h.declare_resources(kmock)
    for name, release in (("ours", "rel-a"), ("theirs", "rel-b")):
        body = h.stream_consumer(name, spec(names(name), "writers", redis_server.url))
        body["metadata"]["labels"] = {"streamscale.io/operator": release}
        kmock.objects[h.STC, h.NAMESPACE, name] = body
    settings = h.settings(redis_server.url, operator_label="rel-a")
    async with h.running_operator(kmock, settings):
        await h.eventually(lambda: h.condition(kmock, "ours", "Ready") == "True")
        await asyncio.sleep(0.5)  # a few polls of the other StreamConsumer, had it one
        assert h.obj(kmock, h.DEPLOYMENTS, "ours") is not None
        assert h.obj(kmock, h.DEPLOYMENTS, "theirs") is None
        theirs = h.obj(kmock, h.STC, "theirs") or {}
        assert not theirs.get("status"), "the other release's operator owns its status"


async def test_an_acl_refusal_is_reported_as_refused_not_unreachable(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, user = names("orders"), names("noperm")
    # Everything but XINFO: the operator's first call of a poll is refused with NOPERM.
    await redis.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "-xinfo")
    try:
        url = redis_server.url.replace("redis://", f"redis://{user}:pw@", 1)
        h.declare_resources(kmock)
        kmock.objects[h.SECRETS, h.NAMESPACE, "redis"] = {
            "metadata": {"name": "redis", "namespace": h.NAMESPACE, "resourceVersion": "1"},
            "data": {"url": base64.b64encode(url.encode()).decode()},
        }
        body = h.stream_consumer("orders", spec(stream, "writers", redis_server.url))
        body["spec"]["redis"] = {"urlSecretRef": {"name": "redis", "key": "url"}}
        kmock.objects[h.STC, h.NAMESPACE, "orders"] = body
        async with h.running_operator(kmock, h.settings(redis_server.url)):
            await h.eventually(lambda: h.condition(kmock, "orders", "Degraded") == "True")
            degraded = next(
                c for c in h.status(kmock, "orders")["conditions"] if c["type"] == "Degraded"
            )
            assert degraded["reason"] == "RedisRefused"
            assert "NoPermissionError" in degraded["message"] and "ACL" in degraded["message"]
            await h.eventually(lambda: h.events(kmock, "RedisRefused"))
            assert not h.events(kmock, "RedisUnavailable")
    finally:
        await redis.execute_command("ACL", "DELUSER", user)


async def test_a_destroyed_group_is_not_recreated_at_the_start_of_a_stream_with_entries(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    """Recreating it at 0 would make the consumers replay the whole stream."""
    stream, group = names("orders"), "writers"
    for n in range(5):
        await redis.xadd(stream, {"n": str(n)})
    h.declare(kmock, "orders", spec(stream, group, redis_server.url))
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        # The first poll creates the missing group: a new StreamConsumer over an existing stream.
        await h.eventually(lambda: h.status(kmock, "orders").get("lag") == 5)
        await redis.xgroup_destroy(stream, group)
        await h.eventually(lambda: h.condition(kmock, "orders", "Degraded") == "True")
        degraded = next(
            c for c in h.status(kmock, "orders")["conditions"] if c["type"] == "Degraded"
        )
        assert degraded["reason"] == "GroupMissing"
        assert "XGROUP CREATE" in degraded["message"]
        await asyncio.sleep(1)  # several polls: none may recreate it
        assert await redis.xinfo_groups(stream) == []
        await redis.xgroup_create(stream, group, id="$")
        await h.eventually(lambda: h.condition(kmock, "orders", "Degraded") == "False")
        assert h.status(kmock, "orders")["lag"] == 0


async def test_a_group_lost_with_its_stream_is_recreated_and_not_reported(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    """As after a Redis restarted empty: nothing to replay, so the group is simply made again."""
    stream, group = names("orders"), "writers"
    await redis.xadd(stream, {"n": "0"})
    h.declare(kmock, "orders", spec(stream, group, redis_server.url))
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.status(kmock, "orders").get("lag") == 1)
        await redis.delete(stream)

        async def recreated() -> bool:
            return [g["name"] for g in await redis.xinfo_groups(stream)] == [group.encode()]

        for _ in range(100):
            if await redis.exists(stream) and await recreated():
                break
            await asyncio.sleep(0.05)
        assert await recreated()
        await h.eventually(lambda: h.status(kmock, "orders").get("lag") == 0)
        assert h.condition(kmock, "orders", "Degraded") != "True"


async def test_drain_time_mode_reports_its_rates_and_scales_on_them(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, group = names("orders"), "writers"
    body = spec(stream, group, redis_server.url)
    body["scaling"] = {  # type: ignore[index]
        **body["scaling"],  # type: ignore[dict-item]
        "mode": "drainTime", "targetDrainSeconds": 10, "replicaThroughput": 20,
    }  # fmt: skip
    h.declare(kmock, "orders", body)
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.status(kmock, "orders").get("scalingBasis") == "backlog")
        # Entries arrive at about 100/s for 1.5 s: several polls measure the arrival rate.
        for n in range(150):
            await redis.xadd(stream, {"n": str(n)})
            if n % 5 == 4:
                await asyncio.sleep(0.05)
        await h.eventually(lambda: h.status(kmock, "orders").get("scalingBasis") == "drainTime")
        status = h.status(kmock, "orders")
        assert status["arrivalRate"] > 0 and status["replicaThroughput"] == 20
        # (arrival + backlog / 10 s) / 20 per replica, clamped to maxReplicas 5: nobody reads,
        # so the backlog alone (>= 100 entries) asks for the maximum.
        assert status["desiredReplicas"] == 5
        assert status["predictedDrainSeconds"] is not None
        await h.eventually(lambda: h.replicas(kmock, "orders") == 5)
        events = h.events(kmock, "ScaledUp")
        assert any("to drain within 10s" in str(e) for e in events), events


async def test_before_a_scale_in_busy_pods_cost_more_to_delete_than_idle_ones(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    stream, group = names("orders"), "writers"
    await backlog(redis, stream, group, 40)
    await redis.xreadgroup(group, "orders-busy-0", {stream: ">"}, count=6)  # 6 in flight
    for pod in ("orders-busy", "orders-idle", "orders-spare"):
        kmock.objects[h.PODS, h.NAMESPACE, pod] = h.pod(pod, "orders")
    h.declare(kmock, "orders", spec(stream, group, redis_server.url))
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.replicas(kmock, "orders") == 4)
        # The idle pod drains the rest; the busy one keeps its 6 entries: backlog 6 asks for 1.
        entries = await redis.xreadgroup(group, "orders-idle-0", {stream: ">"}, count=100)
        await redis.xack(stream, group, *[entry_id for entry_id, _ in entries[0][1]])
        await h.eventually(lambda: h.replicas(kmock, "orders") == 2, timeout=5.0)

        def cost(pod: str) -> str | None:
            body = h.obj(kmock, h.PODS, pod) or {}
            annotations = (body.get("metadata") or {}).get("annotations") or {}
            return annotations.get("controller.kubernetes.io/pod-deletion-cost")

        assert cost("orders-busy") == "6"
        assert cost("orders-idle") == "0" and cost("orders-spare") == "0"


async def test_several_streams_are_scaled_as_one_and_dead_lettered_each_into_its_own(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:
    orders, payments, group = names("orders"), names("payments"), "writers"
    await redis.xgroup_create(payments, group, id="0", mkstream=True)
    for n in range(4):
        await redis.xadd(payments, {"n": str(n), "data": "{}"})
    await redis.xreadgroup(group, "shop-gone", {payments: ">"}, count=4)  # a pod that vanished
    body = spec(orders, group, redis_server.url)
    del body["stream"]
    body["streams"] = [orders, payments]
    body["deadLetter"] = {"maxDeliveries": 3, "idleSeconds": 0}
    h.declare(kmock, "shop", body)
    async with h.running_operator(kmock, h.settings(redis_server.url)):
        await h.eventually(lambda: h.status(kmock, "shop").get("deadLettered") == 4, timeout=15)
        await h.eventually(lambda: h.replicas(kmock, "shop") == 0)
        for n in range(23):
            await redis.xadd(orders, {"n": str(n)})
        for n in range(12):
            await redis.xadd(payments, {"n": str(n)})
        # 35 entries over two streams, 10 per replica: one scaler, 4 replicas.
        await h.eventually(lambda: h.replicas(kmock, "shop") == 4, timeout=2.0)
        await h.eventually(lambda: h.status(kmock, "shop").get("lag") == 35, timeout=2.0)
        by_stream = {s["stream"]: s for s in h.status(kmock, "shop")["streams"]}
        assert by_stream[orders]["lag"] == 23 and by_stream[payments]["lag"] == 12
        env = {
            e["name"]: e.get("value")
            for e in h.obj(kmock, h.DEPLOYMENTS, "shop")["spec"]["template"]["spec"]["containers"][
                0
            ]["env"]
        }
        assert env["STREAMSCALE_STREAM"] == f"{orders},{payments}"
    assert await redis.xlen(payments + ":dlq") == 4
    assert not await redis.exists(orders + ":dlq")
    assert {g["name"] for g in await redis.xinfo_groups(orders)} == {group.encode()}
