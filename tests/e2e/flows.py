"""What the e2e tests do on the local control plane, as a user would: helm, kubectl, redis."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis
import yaml

from tests.e2e.cluster import ControlPlane
from tests.e2e.kubelet import LocalKubelet
from tests.support.chaos import check_invariant, dead_letters, table_ids
from tests.support.consumers import wait_until
from tests.support.servers import PostgresServer

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "streamscale"
EXAMPLE = REPO / "examples" / "streamconsumer.yaml"
CRD = "streamconsumers.streamscale.io"
RELEASE = RELEASE_NAMESPACE = "streamscale"
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"


def install(
    plane: ControlPlane,
    release: str,
    namespace: str,
    redis_url: str,
    *,
    sets: Sequence[str] = (),
    post_renderer: Sequence[str] = (),
    command: str = "install",
    timeout: int = 120,
) -> str:
    """`helm install` (or `upgrade`) of the chart with `--wait`: the operator pod is Ready."""
    args = [command, release, str(CHART), "-n", namespace, "--wait", f"--timeout={timeout}s"]
    if command == "install":
        args.append("--create-namespace")
    args += ["--set", f"redis.url={redis_url}", "--set", "operator.logFormat=console"]
    for item in sets:
        args += ["--set", item]
    if post_renderer:
        args += ["--post-renderer", post_renderer[0]]
        for arg in post_renderer[1:]:
            args += ["--post-renderer-args", arg]
    return plane.helm(*args, timeout=timeout + 30).stdout


def pods(plane: ControlPlane, namespace: str, selector: str) -> list[dict[str, Any]]:
    listing = plane.api().get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)
    items: list[dict[str, Any]] = listing.get("items") or []
    return items


def operator_pod(plane: ControlPlane, namespace: str, release: str) -> dict[str, Any]:
    selector = f"{OPERATOR_SELECTOR},app.kubernetes.io/instance={release}"
    found = wait_until(
        lambda: [
            p
            for p in pods(plane, namespace, selector)
            if not p["metadata"].get("deletionTimestamp")
        ],
        60,
        what=f"the operator pod of {release}",
    )
    pod: dict[str, Any] = found[0]
    return pod


def operator_log(kubelet: LocalKubelet, plane: ControlPlane, namespace: str, release: str) -> str:
    """Every log of every operator pod of `release` the kubelet ran (restarts included)."""
    pattern = f"{namespace}_{release}-*.log"
    return "\n".join(p.read_text(errors="replace") for p in sorted(kubelet.logs.glob(pattern)))


def stream_consumer(
    name: str,
    redis_url: str,
    *,
    stream: str,
    group: str,
    scaling: dict[str, Any] | None = None,
    dead_letter: dict[str, Any] | None = None,
    env: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """examples/streamconsumer.yaml with this test's Redis, names and faster timings."""
    body: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    body["metadata"]["name"] = name
    spec = body["spec"]
    spec["stream"], spec["group"] = stream, group
    spec["redis"]["url"] = redis_url
    spec["scaling"].update(scaling or {})
    spec["deadLetter"]["stream"] = f"{stream}:dlq"
    spec["deadLetter"].update(dead_letter or {})
    spec["consumer"]["env"] = [*spec["consumer"]["env"], *env]
    return body


def apply(plane: ControlPlane, namespace: str, body: dict[str, Any]) -> None:
    plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(body))


def create_pg_secret(plane: ControlPlane, namespace: str, database_url: str) -> None:
    """The example's Secret, as its header comment says to create it."""
    plane.kubectl(
        "create", "secret", "generic", "pg", "-n", namespace, f"--from-literal=url={database_url}"
    )


def deployment(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any] | None:
    return plane.api().get_or_none(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")


def replicas(plane: ControlPlane, namespace: str, name: str) -> int | None:
    found = deployment(plane, namespace, name)
    return None if found is None else int(found["spec"].get("replicas", 0))


def stc(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    path = f"/apis/streamscale.io/v1alpha1/namespaces/{namespace}/streamconsumers/{name}"
    body: dict[str, Any] = plane.api().get(path)
    return body


def group_consumers(client: redis.Redis, stream: str, group: str) -> dict[str, int]:
    """XINFO CONSUMERS: consumer name -> pending count ({} while the group is missing)."""
    try:
        infos = client.xinfo_consumers(stream, group)
    except redis.ResponseError:
        return {}
    return {_text(info["name"]): int(info["pending"]) for info in infos}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def watch(period: float, until: Callable[[], bool], timeout: float, what: str,
          each: Callable[[], None]) -> None:  # fmt: skip
    """Call `each` every `period` seconds until `until()`; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        each()
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(period)


def account(
    pg: PostgresServer,
    database_url: str,
    client: redis.Redis,
    stream: str,
    produced: Sequence[str],
    poison: set[str],
    stranded: set[str] | None = None,
) -> str:
    """Issue 11's point 7: every produced ID is in exactly one of {table, dead-letter stream}."""
    db = database_url.rsplit("/", 1)[1]
    exists = pg.psql("SELECT to_regclass('product') IS NOT NULL", database=db) == "t"
    rows = table_ids(pg, database_url, "product") if exists else []
    letters = dead_letters(client, f"{stream}:dlq")
    verdict = check_invariant(produced, poison, rows, letters, stranded=stranded)
    assert verdict.ok, verdict.table("accounting")
    return verdict.table(f"{stream}: every produced entry in exactly one place")


def clean_namespace(plane: ControlPlane, namespace: str) -> None:
    """Delete `namespace` with its StreamConsumers, whether or not an operator still runs."""
    plane.kubectl("delete", "stc", "--all", "-n", namespace, "--wait=false", check=False)
    listing = plane.kubectl("get", "stc", "-n", namespace, "-o", "name", check=False).stdout
    for item in listing.split():
        # The kopf finalizer stays when no operator is left to remove it.
        patch = '{"metadata":{"finalizers":null}}'
        plane.kubectl("patch", item, "-n", namespace, "--type=merge", "-p", patch, check=False)
    plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
