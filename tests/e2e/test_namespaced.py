"""Issue 11, point 6: two namespaced releases side by side; helm upgrade and helm uninstall."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import pytest

from tests.e2e import flows as f
from tests.e2e.cluster import ControlPlane
from tests.e2e.kubelet import LocalKubelet
from tests.support.consumers import wait_until
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
KINDS = (
    "deployments,serviceaccounts,services,roles,rolebindings,configmaps,"
    "clusterroles,clusterrolebindings,kopfpeerings,clusterkopfpeerings"
)


def leftovers(plane: ControlPlane, release: str) -> list[str]:
    """Every object labelled as part of `release`, in any namespace."""
    out = plane.kubectl(
        "get", KINDS, "-A", "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
    ).stdout
    return out.split()


def served(plane: ControlPlane, ns: str, name: str) -> bool:
    """The StreamConsumer has its Deployment and a status written by an operator."""
    status = f.stc(plane, ns, name).get("status") or {}
    return f.deployment(plane, ns, name) is not None and "desiredReplicas" in status


def test_two_namespaced_releases_keep_to_their_namespaces(
    plane: ControlPlane,
    kubelet: LocalKubelet,
    redis_server: RedisServer,
    database_url: str,
    names: Callable[[str], str],
    namespace: Callable[[str], str],
) -> None:
    teams = {"team-a": namespace("apps-a"), "team-b": namespace("apps-b")}
    for release, watched in teams.items():
        namespace(release)
        f.create_pg_secret(plane, watched, database_url)
        f.install(
            plane, release, release, redis_server.url,
            sets=["rbac.clusterWide=false", f"operator.watchNamespaces={{{watched}}}"],
        )  # fmt: skip
    for watched in teams.values():
        body = f.stream_consumer("products", redis_server.url, stream=names("p"), group="g")
        f.apply(plane, watched, body)
        wait_until(
            functools.partial(served, plane, watched, "products"), 60, what=f"{watched}/products"
        )
    for release, watched in teams.items():
        other = next(w for w in teams.values() if w != watched)
        log = f.operator_log(kubelet, plane, release, release)
        assert other not in log, f"{release} mentions {other}:\n{log[-2000:]}"
        assert "Forbidden" not in log, log[-2000:]

    # With team-b's operator stopped, a new StreamConsumer in apps-b stays untouched, while one
    # in apps-a is served as before.
    plane.kubectl("scale", "deployment", "team-b-streamscale", "-n", "team-b", "--replicas=0")
    wait_until(lambda: not f.pods(plane, "team-b", f.OPERATOR_SELECTOR), 60, what="team-b stopped")
    # The same stream as `products`: another stream into its model's table would be refused.
    for watched in teams.values():
        body = f.stream_consumer("later", redis_server.url, stream=names("p"), group="g")
        f.apply(plane, watched, body)
    wait_until(lambda: f.deployment(plane, teams["team-a"], "later"), 60, what="apps-a/later")
    assert f.deployment(plane, teams["team-b"], "later") is None
    plane.kubectl("scale", "deployment", "team-b-streamscale", "-n", "team-b", "--replicas=1")

    # helm upgrade with a changed value rolls the operator (strategy Recreate): a new pod with it.
    before = f.operator_pod(plane, "team-a", "team-a")
    f.install(
        plane, "team-a", "team-a", redis_server.url, command="upgrade",
        sets=[
            "rbac.clusterWide=false", f"operator.watchNamespaces={{{teams['team-a']}}}",
            "operator.peering.priority=7",
        ],
    )  # fmt: skip
    after = f.operator_pod(plane, "team-a", "team-a")
    assert after["metadata"]["name"] != before["metadata"]["name"]
    env = {e["name"]: e.get("value") for e in after["spec"]["containers"][0]["env"]}
    assert env["STREAMSCALE_PRIORITY"] == "7"
    wait_until(
        lambda: f.stc(plane, teams["team-a"], "later").get("status"), 60, what="a status again"
    )

    # helm uninstall removes everything of the release, but not the CRD.
    for release, watched in teams.items():
        plane.kubectl("delete", "stc", "--all", "-n", watched, "--timeout=30s")
        plane.helm("uninstall", release, "-n", release, "--wait", "--timeout=60s")
        assert leftovers(plane, release) == [], leftovers(plane, release)
        secrets = plane.kubectl("get", "secrets", "-n", release, "-l", "owner=helm", "-o", "json")
        assert json.loads(secrets.stdout)["items"] == []
    plane.kubectl("get", "crd", f.CRD)
