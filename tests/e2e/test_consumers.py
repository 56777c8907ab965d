"""Issue 11, points 2, 5 and 7: a StreamConsumer applied with kubectl, scaled by the operator.

The ReplicaSet's pods run as local consumers (the local kubelet); every produced entry ends in
exactly one of {table, dead-letter stream}.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from tests.e2e import flows as f
from tests.e2e.cluster import ControlPlane
from tests.e2e.kubelet import LocalKubelet
from tests.support.chaos import drained, payloads
from tests.support.consumers import produce, wait_until
from tests.support.servers import PostgresServer, RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
CONSUMER_SELECTOR = "app.kubernetes.io/name=streamscale-consumer,app.kubernetes.io/instance={}"


def burst(
    client: redis.Redis, stream: str, total: int, poison_every: int
) -> tuple[list[str], set[str]]:
    """`total` product messages, every `poison_every`-th one poison: (all IDs, poison IDs)."""
    items = list(payloads(total, poison_every))
    ids = produce(client, stream, [payload for _, payload in items])
    return ids, {i for i, (bad, _) in zip(ids, items, strict=True) if bad}


def test_a_burst_scales_the_consumers_up_and_back_to_min_replicas(
    plane: ControlPlane,
    kubelet: LocalKubelet,
    release: str,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    database_url: str,
    names: Callable[[str], str],
    namespace: Callable[[str], str],
) -> None:
    ns, name = namespace("flow"), "products"
    stream, group = names("products"), "product-writers"
    client = redis.Redis.from_url(redis_server.url)
    f.create_pg_secret(plane, ns, database_url)
    body = f.stream_consumer(
        name,
        redis_server.url,
        stream=stream,
        group=group,
        scaling={
            "maxReplicas": 3,
            "backlogPerReplica": 2000,
            "pollSeconds": 1,
            "scaleDownStabilizationSeconds": 5,
        },
    )
    f.apply(plane, ns, body)
    owner = f.stc(plane, ns, name)
    deployment = wait_until(lambda: f.deployment(plane, ns, name), 30, what="the owned Deployment")
    (ref,) = deployment["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"]) == (
        "StreamConsumer",
        name,
        owner["metadata"]["uid"],
    )
    assert deployment["spec"]["replicas"] == 0
    # The API server's defaulting: a `:latest` image would get imagePullPolicy Always, and a
    # cluster could never run the image the README loads into kind.
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["imagePullPolicy"] == "IfNotPresent", container["image"]

    produced, poison = burst(client, stream, 20_000, poison_every=500)
    selector = CONSUMER_SELECTOR.format(name)
    pod_names: set[str] = set()
    consumer_names: set[str] = set()
    most = 0
    busy_view = ""

    def look() -> None:
        nonlocal most, busy_view
        pod_names.update(p["metadata"]["name"] for p in f.pods(plane, ns, selector))
        consumer_names.update(f.group_consumers(client, stream, group))
        now = f.replicas(plane, ns, name) or 0
        if now > most:
            most = now
            busy_view = plane.kubectl("get", "stc", "-n", ns).stdout

    def done() -> bool:
        status = f.stc(plane, ns, name).get("status") or {}
        return (
            drained(client, stream, group, len(produced))
            and f.replicas(plane, ns, name) == 0
            and status.get("replicas") == 0
            and not f.pods(plane, ns, selector)
        )

    f.watch(0.5, done, 180, "the drain and the scale-down to minReplicas 0", look)
    assert most >= 2, f"never scaled past {most} replicas"
    assert consumer_names, "no consumer ever joined the group"
    # Consumer names are the pod names (`<pod>-<n>` for each coroutine of a pod's process).
    owners = {c.rpartition("-")[0] if c not in pod_names else c for c in consumer_names}
    assert owners <= pod_names, (consumer_names, pod_names)
    assert owners == pod_names, f"pods that never consumed: {pod_names - owners}"
    print(f"\nscaled 0 -> {most} -> 0; consumers = pods: {sorted(consumer_names)}")
    print(busy_view)

    view = plane.kubectl("get", "stc", "-n", ns).stdout
    header, row = view.splitlines()[:2]
    assert header.split() == [
        "NAME", "STREAM", "GROUP", "REPLICAS", "DESIRED", "LAG", "PENDING", "DEAD-LETTERED", "AGE"
    ]  # fmt: skip
    # Dead-lettered counts the operator's moves; the consumers dead-lettered the poison themselves.
    assert row.split()[:8] == [name, stream, group, "0", "0", "0", "0", "0"], view
    busy = busy_view.splitlines()[1].split()
    assert int(busy[3]) >= 1 and int(busy[4]) >= 2, busy_view
    print(view)

    events = json.loads(plane.kubectl("get", "events", "-n", ns, "-o", "json").stdout)
    reasons = {e["reason"] for e in events["items"] if e["involvedObject"]["name"] == name}
    assert {"ScaledUp", "ScaledDown"} <= reasons, reasons
    print(plane.kubectl("get", "events", "-n", ns, "--field-selector", "reason=ScaledUp").stdout)
    print(f.account(postgres_server, database_url, client, stream, produced, poison))
    client.close()


def test_deleting_the_stream_consumer_garbage_collects_its_consumers(
    plane: ControlPlane,
    kubelet: LocalKubelet,
    release: str,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    database_url: str,
    names: Callable[[str], str],
    namespace: Callable[[str], str],
) -> None:
    ns, name = namespace("gc"), "products"
    stream, group = names("products"), "product-writers"
    client = redis.Redis.from_url(redis_server.url)
    f.create_pg_secret(plane, ns, database_url)
    body = f.stream_consumer(
        name, redis_server.url, stream=stream, group=group,
        scaling={"minReplicas": 2, "maxReplicas": 2, "pollSeconds": 1},
    )  # fmt: skip
    f.apply(plane, ns, body)
    selector = CONSUMER_SELECTOR.format(name)
    produced, poison = burst(client, stream, 2_000, poison_every=250)
    wait_until(
        lambda: (
            drained(client, stream, group, len(produced))
            and len({c.rpartition("-")[0] for c in f.group_consumers(client, stream, group)}) == 2
        ),
        90,
        what="two consumers draining the stream",
    )
    pods = {p["metadata"]["name"] for p in f.pods(plane, ns, selector)}
    owners = {c.rpartition("-")[0] for c in f.group_consumers(client, stream, group)}
    assert owners == pods, (owners, pods)

    plane.kubectl("delete", "stc", name, "-n", ns, "--wait=true", "--timeout=60s")
    # Nobody but the garbage collector deletes the Deployment: the operator only owns it.
    wait_until(lambda: f.deployment(plane, ns, name) is None, 60, what="the GC")
    wait_until(lambda: not f.pods(plane, ns, selector), 60, what="the pods to go")
    wait_until(lambda: not f.group_consumers(client, stream, group), 30, what="consumers to leave")
    print("\n" + f.account(postgres_server, database_url, client, stream, produced, poison))
    client.close()
