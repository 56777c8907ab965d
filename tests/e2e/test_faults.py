"""Issue 11, points 4 and 7: pods deleted with kubectl in the middle of the work.

A busy consumer's pod deleted mid-burst (gracefully, then another one at once with --force), and
the operator's pod deleted while it moves entries to the dead-letter stream: nothing is lost,
nothing is duplicated in the table or in the dead-letter stream.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest
import redis

from tests.e2e import flows as f
from tests.e2e.cluster import ControlPlane
from tests.e2e.kubelet import LocalKubelet
from tests.support.chaos import Producer, drained
from tests.support.consumers import wait_until
from tests.support.servers import PostgresServer, RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
CONSUMERS = "app.kubernetes.io/name=streamscale-consumer,app.kubernetes.io/instance={}"


def busy_pod(plane: ControlPlane, ns: str, name: str, client: redis.Redis, stream: str) -> str:
    """A running consumer pod of `name` that has entries pending right now."""

    def find() -> str | None:
        pending = f.group_consumers(client, stream, "writers")
        for pod in f.pods(plane, ns, CONSUMERS.format(name)):
            pod_name = pod["metadata"]["name"]
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if any(c.startswith(pod_name) and n > 0 for c, n in pending.items()):
                return str(pod_name)
        return None

    found: str = wait_until(find, 30, interval=0.05, what="a consumer pod with entries pending")
    return found


def test_deleting_busy_consumer_pods_mid_burst_loses_and_doubles_nothing(
    plane: ControlPlane,
    kubelet: LocalKubelet,
    release: str,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    database_url: str,
    names: Callable[[str], str],
    namespace: Callable[[str], str],
) -> None:
    ns, name = namespace("busy"), "products"
    stream = names("products")
    client = redis.Redis.from_url(redis_server.url)
    f.create_pg_secret(plane, ns, database_url)
    body = f.stream_consumer(
        name, redis_server.url, stream=stream, group="writers",
        scaling={"minReplicas": 2, "maxReplicas": 2, "pollSeconds": 1},
        env=[
            {"name": "STREAMSCALE_CLAIM_IDLE_MS", "value": "2000"},
            {"name": "STREAMSCALE_CLAIM_INTERVAL_MS", "value": "500"},
            {"name": "STREAMSCALE_BATCH_SIZE", "value": "200"},
        ],
    )  # fmt: skip
    f.apply(plane, ns, body)
    wait_until(
        lambda: (
            len({c.rpartition("-")[0] for c in f.group_consumers(client, stream, "writers")}) == 2
        ),
        60,
        what="two consumer pods in the group",
    )
    producer = Producer(redis_server.url, stream, 60_000, 400, threading.Lock(), rate=4000)
    producer.start()
    graceful = busy_pod(plane, ns, name, client, stream)
    plane.kubectl("delete", "pod", graceful, "-n", ns, "--wait=false")
    time.sleep(3)
    forced = busy_pod(plane, ns, name, client, stream)
    plane.kubectl("delete", "pod", forced, "-n", ns, "--grace-period=0", "--force")
    print(f"\ndeleted {graceful} (SIGTERM) and {forced} (--force: SIGKILL) mid-burst")
    assert producer.done.wait(60) and producer.error is None, producer.error
    wait_until(lambda: drained(client, stream, "writers", len(producer.ids)), 120, what="the drain")
    # The SIGKILLed pod's entries are claimed by the live consumer, never dead-lettered (the
    # mover's idleSeconds is 300): so the strict accounting, where only poison is dead-lettered.
    print(f.account(postgres_server, database_url, client, stream, producer.ids, producer.poison))
    client.close()


def test_deleting_the_operator_pod_mid_dead_letter_moves_loses_and_doubles_nothing(
    plane: ControlPlane,
    kubelet: LocalKubelet,
    release: str,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    database_url: str,
    names: Callable[[str], str],
    namespace: Callable[[str], str],
) -> None:
    total = 150_000
    ns, name = namespace("mover"), "products"
    stream = names("products")
    client = redis.Redis.from_url(redis_server.url)
    f.create_pg_secret(plane, ns, database_url)
    # Entries read by a consumer that has no pod: the operator's mover dead-letters them once
    # idle (reason `idle`). The real consumers never claim them (CLAIM_IDLE_MS: 10 minutes).
    client.xgroup_create(stream, "writers", id="0", mkstream=True)
    producer = Producer(redis_server.url, stream, total, 0, threading.Lock(), chunk=5000)
    producer.run()
    assert producer.error is None
    client.xreadgroup("writers", "ghost-0", {stream: ">"}, count=total)
    assert f.group_consumers(client, stream, "writers") == {"ghost-0": total}
    body = f.stream_consumer(
        name, redis_server.url, stream=stream, group="writers",
        scaling={"minReplicas": 0, "maxReplicas": 1, "pollSeconds": 1},
        dead_letter={"idleSeconds": 1},
        env=[{"name": "STREAMSCALE_CLAIM_IDLE_MS", "value": "600000"}],
    )  # fmt: skip
    time.sleep(5)  # the operator's floor: nothing idle for less than 5 s ever moves
    f.apply(plane, ns, body)
    dlq = f"{stream}:dlq"
    moved = wait_until(lambda: client.xlen(dlq), 60, interval=0.02, what="the first moves")
    operator = f.operator_pod(plane, f.RELEASE_NAMESPACE, release)["metadata"]["name"]
    plane.kubectl("delete", "pod", operator, "-n", f.RELEASE_NAMESPACE, "--wait=false")
    at_delete = client.xlen(dlq)
    print(f"\ndeleted the operator pod {operator} with {moved}..{at_delete} of {total} moved")
    wait_until(
        lambda: f.operator_pod(plane, f.RELEASE_NAMESPACE, release)["metadata"]["name"] != operator,
        60,
        what="a new operator pod",
    )
    wait_until(
        lambda: drained(client, stream, "writers", total), 120, what="every move, by the new pod"
    )
    print(f.account(postgres_server, database_url, client, stream, producer.ids, set(),
                    stranded=set(producer.ids)))  # fmt: skip
    assert at_delete < total, "the moves were over before the operator's pod was deleted"
    client.close()


def test_a_crashed_operator_process_is_restarted_in_its_pod(
    plane: ControlPlane,
    kubelet: LocalKubelet,
    release: str,
    redis_server: RedisServer,
    database_url: str,
    names: Callable[[str], str],
    namespace: Callable[[str], str],
) -> None:
    pod = f.operator_pod(plane, f.RELEASE_NAMESPACE, release)
    run = kubelet.runs[pod["metadata"]["uid"]]
    assert run.proc is not None
    os.killpg(run.proc.pid, signal.SIGKILL)  # the container dies; the pod object stays

    def restarted() -> bool:
        status = f.operator_pod(plane, f.RELEASE_NAMESPACE, release)["status"]
        (container,) = status["containerStatuses"]
        return bool(container["restartCount"] == 1 and container["ready"])

    wait_until(restarted, 60, what="restartCount 1 and Ready again")
    ns = namespace("after-crash")
    f.create_pg_secret(plane, ns, database_url)
    f.apply(plane, ns, f.stream_consumer("p", redis_server.url, stream=names("p"), group="g"))
    wait_until(lambda: f.deployment(plane, ns, "p"), 60, what="the restarted operator at work")
