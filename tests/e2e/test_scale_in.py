"""Issue 12, busy-aware scale-in, on the real control plane: the ReplicaSet removes idle pods.

Three consumer pods of a handler-mode StreamConsumer run as local processes. One message whose
handler takes HANDLE_SECONDS makes exactly one of them busy (one entry pending on its consumer).
Lowering `minReplicas` then scales 3 -> 2 -> 1. Before each step the operator sets
`controller.kubernetes.io/pod-deletion-cost` from the pending counts; kube-controller-manager's
ReplicaSet controller, not the operator, chooses which pods to delete, and it must delete the idle
ones and keep the busy one, which then finishes and acks its message.

To make the outcome depend on the operator's costs and nothing else, the test first writes costs
left over from an earlier scale-in, when the other pods were the busy ones: the busy pod 0, the
idle ones 50. Without fresh costs the ReplicaSet would delete the busy pod first (lowest cost).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.e2e import flows as f
from tests.e2e.cluster import ControlPlane
from tests.e2e.kubelet import LocalKubelet
from tests.support.consumers import wait_until
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
CONSUMERS = "app.kubernetes.io/name=streamscale-consumer,app.kubernetes.io/instance={}"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
HANDLE_SECONDS = 25
"""How long the busy pod's one message takes: over ten times the scale-in (about 2 s here), well
below the claim and dead-letter idle times, so nobody else takes the entry meanwhile."""
SCALE_IN_TIMEOUT = 30


def live_pods(plane: ControlPlane, ns: str, name: str) -> dict[str, dict[str, Any]]:
    """The consumer pods not being deleted, by name."""
    return {
        p["metadata"]["name"]: p
        for p in f.pods(plane, ns, CONSUMERS.format(name))
        if not p["metadata"].get("deletionTimestamp")
    }


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def owner(consumer: str, pods: set[str]) -> str | None:
    """The pod of a consumer name (`<pod>` or `<pod>-<n>`), as the operator maps them."""
    base = consumer.rpartition("-")[0]
    return consumer if consumer in pods else base if base in pods else None


def test_a_scale_in_deletes_the_idle_pods_and_keeps_the_busy_one(
    plane: ControlPlane,
    kubelet: LocalKubelet,
    release: str,
    redis_server: RedisServer,
    names: Callable[[str], str],
    namespace: Callable[[str], str],
) -> None:
    ns, name = namespace("scale-in"), "echo"
    stream, group, replies = names("messages"), "echo-service", names("replies")
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    body = f.stream_consumer(
        name,
        redis_server.url,
        stream=stream,
        group=group,
        scaling={
            "minReplicas": 3,
            "maxReplicas": 3,
            "pollSeconds": 1,
            "scaleDownStabilizationSeconds": 1,
        },
        env=[
            {"name": "AI_SERVICE_DELAY_SECONDS", "value": str(HANDLE_SECONDS)},
            # Nobody claims the busy consumer's entry while its handler runs.
            {"name": "STREAMSCALE_CLAIM_IDLE_MS", "value": "600000"},
        ],
    )
    spec = body["spec"]
    del spec["model"], spec["database"]
    spec["handler"] = "examples.ai_service:handle"
    f.apply(plane, ns, body)

    # Three ready pods, each with its readers registered in the group.
    def three_consuming() -> set[str] | None:
        pods = live_pods(plane, ns, name)
        if len(pods) != 3 or not all(is_ready(p) for p in pods.values()):
            return None
        owners = {owner(c, set(pods)) for c in f.group_consumers(client, stream, group)}
        return set(pods) if owners == set(pods) else None

    pods = wait_until(three_consuming, 90, interval=0.5, what="3 ready pods in the group")

    # One slow message: whichever reader takes it, its pod is the busy one.
    payload = {"user_id": "ada", "message": "take your time"}
    entry = client.xadd(stream, {"data": json.dumps(payload), "reply_to": replies})
    taken_at = time.monotonic()

    def holder() -> str | None:
        busy = [c for c, n in f.group_consumers(client, stream, group).items() if n]
        return busy[0] if len(busy) == 1 else None

    consumer = wait_until(holder, 15, what="a consumer to take the slow message")
    busy = owner(consumer, pods)
    assert busy is not None, (consumer, pods)
    idle = pods - {busy}

    # Costs from an earlier scale-in that would make the ReplicaSet delete the busy pod first.
    for pod, stale in [(busy, "0"), *((p, "50") for p in idle)]:
        path = f"/api/v1/namespaces/{ns}/pods/{pod}"
        plane.api().merge_patch(path, {"metadata": {"annotations": {DELETION_COST: stale}}})

    plane.kubectl(
        "patch", "stc", name, "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"scaling": {"minReplicas": 1}}}),
    )  # fmt: skip
    deleted: list[str] = []

    def look() -> None:
        for pod in f.pods(plane, ns, CONSUMERS.format(name)):
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") and meta["name"] not in deleted:
                deleted.append(meta["name"])

    def scaled_in_or_busy_deleted() -> bool:
        if busy in deleted:
            return True  # fails below, at once and saying so
        return f.replicas(plane, ns, name) == 1 and set(live_pods(plane, ns, name)) == {busy}

    f.watch(
        0.2,
        scaled_in_or_busy_deleted,
        SCALE_IN_TIMEOUT,
        "the scale-in to 1 replica",
        look,
    )
    scaled_in = time.monotonic() - taken_at
    look()
    assert busy not in deleted, f"the ReplicaSet deleted the busy pod {busy}: {deleted}"
    assert sorted(deleted) == sorted(idle), (deleted, idle)
    # The scale-in happened while the message was in the busy pod's handler: it proves nothing
    # otherwise (raise HANDLE_SECONDS if this fails on a slow machine).
    assert f.group_consumers(client, stream, group).get(consumer) == 1, (
        f"the handler finished before the scale-in ({scaled_in:.1f}s)"
    )
    survivor = live_pods(plane, ns, name)[busy]
    annotations = survivor["metadata"].get("annotations") or {}
    assert annotations.get(DELETION_COST) == "1", annotations  # the operator's, from 1 pending
    events = json.loads(plane.kubectl("get", "events", "-n", ns, "-o", "json").stdout)
    scaled = [e["message"] for e in events["items"] if e["reason"] == "ScaledDown"]
    assert any("3 -> 2" in m for m in scaled) and any("2 -> 1" in m for m in scaled), scaled

    # The busy pod was left to finish: its reply arrives and its entry is acked, nothing is
    # dead-lettered, and the idle pods' consumers have left the group.
    reply = wait_until(
        lambda: client.xrange(replies), HANDLE_SECONDS + 20, interval=0.5, what="the reply"
    )
    assert json.loads(reply[0][1]["data"])["response"] == "Echo: take your time", reply
    assert reply[0][1]["in_reply_to"] == entry, reply
    wait_until(
        lambda: not any(f.group_consumers(client, stream, group).values()), 10, what="the ack"
    )
    assert client.xlen(f"{stream}:dlq") == 0
    assert client.xpending(stream, group)["pending"] == 0
    wait_until(
        lambda: {owner(c, {busy}) for c in f.group_consumers(client, stream, group)} == {busy},
        15,
        what="the idle pods' consumers to leave the group",
    )
    print(f"\nscaled 3 -> 1 in {scaled_in:.1f}s; deleted {deleted}, kept {busy} ({entry})")
    client.close()
