"""Issue 11, point 1: the chart's operator RBAC is exactly what the real API server needs.

The same short flow runs against the complete chart (it must pass, with no Forbidden in the
operator's log) and against the chart minus one rule (a helm post-renderer drops it): then the
flow must fail, and the log shows the API server's Forbidden.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.e2e import flows as f
from tests.e2e.cluster import ControlPlane
from tests.e2e.kubelet import LocalKubelet
from tests.support.chaos import drained, payloads
from tests.support.consumers import produce, wait_until
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
DROP_RULE = Path(__file__).with_name("drop_rule.py")
FLOW_SECONDS = 25


def operator_works(
    plane: ControlPlane, ns: str, client: redis.Redis, redis_url: str, stream: str
) -> None:
    """A StreamConsumer gets its Deployment, a consumer pod in the group, status, a drain; the
    consumer of a pod killed at once (no SIGTERM, so it stays in the group) is removed."""
    body = f.stream_consumer(
        "rbac", redis_url, stream=stream, group="g",
        scaling={"minReplicas": 1, "maxReplicas": 1, "pollSeconds": 1},
    )  # fmt: skip
    f.apply(plane, ns, body)
    wait_until(lambda: f.deployment(plane, ns, "rbac"), FLOW_SECONDS, what="the Deployment")
    ids = produce(client, stream, [p for _, p in payloads(200, 0)])
    wait_until(lambda: drained(client, stream, "g", len(ids)), FLOW_SECONDS, what="the drain")

    def reported() -> bool:
        status = f.stc(plane, ns, "rbac").get("status") or {}
        return status.get("replicas") == 1 and status.get("consumers", 0) >= 1

    wait_until(reported, FLOW_SECONDS, what="status.replicas and status.consumers")

    selector = "app.kubernetes.io/name=streamscale-consumer,app.kubernetes.io/instance=rbac"
    (pod,) = [p["metadata"]["name"] for p in f.pods(plane, ns, selector)]
    plane.kubectl("delete", "pod", pod, "-n", ns, "--grace-period=0", "--force")
    wait_until(
        lambda: not any(c.startswith(pod) for c in f.group_consumers(client, stream, "g")),
        FLOW_SECONDS + 30,
        what=f"the operator to remove the consumers of the gone pod {pod}",
    )


@pytest.mark.parametrize(
    "rule",
    [None, ("apps", "deployments"), ("streamscale.io", "streamconsumers/status"), ("", "pods")],
    ids=["complete", "no-deployments", "no-status", "no-pods"],
)
def test_every_rule_of_the_operator_is_needed(
    plane: ControlPlane,
    kubelet: LocalKubelet,
    redis_server: RedisServer,
    database_url: str,
    names: Callable[[str], str],
    namespace: Callable[[str], str],
    tmp_path: Path,
    rule: tuple[str, str] | None,
) -> None:
    release = "rbac"
    ns = namespace(names("rbac"))
    f.create_pg_secret(plane, ns, database_url)
    renderer: list[str] = []
    if rule is not None:
        wrapper = tmp_path / "drop-rule"
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {DROP_RULE} "$@"\n')
        wrapper.chmod(0o755)
        renderer = [str(wrapper), *rule]
    f.install(plane, release, ns, redis_server.url, post_renderer=renderer)
    client = redis.Redis.from_url(redis_server.url)
    try:
        if rule is None:
            operator_works(plane, ns, client, redis_server.url, names("rbac"))
            assert "Forbidden" not in f.operator_log(kubelet, plane, ns, release)
        else:
            with pytest.raises(AssertionError) as failed:
                operator_works(plane, ns, client, redis_server.url, names("rbac"))
            log = f.operator_log(kubelet, plane, ns, release)
            assert "Forbidden" in log or "403" in log, log[-2000:]
            print(f"\nwithout {'/'.join(rule)}: {failed.value}")
    finally:
        client.close()
        plane.kubectl("delete", "stc", "--all", "-n", ns, "--timeout=20s", check=False)
        plane.helm("uninstall", release, "-n", ns, "--wait", "--timeout=60s")
