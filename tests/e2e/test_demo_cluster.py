"""`make demo-cluster`: the e2e control plane for a person to watch.

Installs the chart with helm, applies the example StreamConsumer with its Secret, produces a
burst, and prints `kubectl get stc` and `kubectl get pods` every second while the operator scales
the consumers up and back down; then cleans everything up. Each command is printed as it runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from tests.e2e import flows as f
from tests.e2e.cluster import ControlPlane
from tests.e2e.kubelet import LocalKubelet
from tests.support.chaos import Producer, drained
from tests.support.servers import PostgresServer, RedisServer

pytestmark = [pytest.mark.demo, pytest.mark.timeout(600)]
TOTAL, RATE = 60_000, 3_000
WATCH_SECONDS = 240


def say(text: str) -> None:
    print(f"\n\033[1m{text}\033[0m", flush=True)


def show(plane: ControlPlane, *args: str) -> None:
    say("$ kubectl " + " ".join(args))
    print(plane.kubectl(*args).stdout, end="", flush=True)


def test_demo_cluster(
    plane: ControlPlane,
    kubelet: LocalKubelet,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    database_url: str,
    names: Callable[[str], str],
) -> None:
    say(f"control plane up in {plane.startup_seconds:.1f}s; KUBECONFIG={plane.kubeconfig}")
    say(f"$ helm install streamscale charts/streamscale -n streamscale --create-namespace "
        f"--set redis.url={redis_server.url} --wait")  # fmt: skip
    f.install(plane, f.RELEASE, f.RELEASE_NAMESPACE, redis_server.url)
    show(plane, "get", "pods", "-n", f.RELEASE_NAMESPACE, "-o", "wide")

    ns, stream = "demo", names("products")
    say("$ kubectl create namespace demo")
    plane.kubectl("create", "namespace", ns)
    say("$ kubectl create secret generic pg -n demo --from-literal=url=postgresql://...")
    f.create_pg_secret(plane, ns, database_url)
    body = f.stream_consumer(
        "products", redis_server.url, stream=stream, group="product-writers",
        scaling={"maxReplicas": 4, "backlogPerReplica": 3000, "pollSeconds": 1,
                 "scaleDownStabilizationSeconds": 10},
    )  # fmt: skip
    say("$ kubectl apply -n demo -f examples/streamconsumer.yaml  (local Redis, faster polling)")
    f.apply(plane, ns, body)

    client = redis.Redis.from_url(redis_server.url)
    producer = Producer(redis_server.url, stream, TOTAL, 1000, threading.Lock(), rate=RATE)
    say(f"producing {TOTAL:,} messages at {RATE:,}/s into {stream} (1 in 1000 is poison)")
    producer.start()
    started = time.monotonic()
    deadline = started + WATCH_SECONDS
    while time.monotonic() < deadline:
        stc = plane.kubectl("get", "stc", "-n", ns).stdout
        pods = plane.kubectl("get", "pods", "-n", ns).stdout
        print(f"\n--- t={time.monotonic() - started:5.1f}s, produced {len(producer.ids):,}")
        print(stc + pods, end="", flush=True)
        status = f.stc(plane, ns, "products").get("status") or {}
        if (
            producer.done.is_set()
            and drained(client, stream, "product-writers", len(producer.ids))
            and status.get("replicas") == 0
            and "products-" not in pods
        ):
            break
        time.sleep(1)
    show(plane, "get", "events", "-n", ns, "--sort-by=.lastTimestamp")
    say(f.account(postgres_server, database_url, client, stream, producer.ids, producer.poison))
    say("cleaning up: kubectl delete stc products; helm uninstall streamscale")
    plane.kubectl("delete", "stc", "products", "-n", ns, "--timeout=60s")
    plane.helm("uninstall", f.RELEASE, "-n", f.RELEASE_NAMESPACE, "--wait", "--timeout=60s")
    client.close()
