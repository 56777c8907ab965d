"""Issue 11, points 1 and 3: the chart on a real API server, and the CRD's own validation."""

from __future__ import annotations

import json

import pytest

from tests.e2e import flows as f
from tests.e2e.cluster import ControlPlane
from tests.e2e.kubelet import LocalKubelet
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
NAMESPACE = f.RELEASE_NAMESPACE


def test_helm_install_runs_the_operator_as_the_charts_service_account(
    plane: ControlPlane, kubelet: LocalKubelet, release: str
) -> None:
    plane.kubectl("wait", "--for=condition=Established", f"crd/{f.CRD}", "--timeout=30s")
    pod = f.operator_pod(plane, NAMESPACE, release)
    assert pod["spec"]["serviceAccountName"] == release
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True", pod["status"]
    # The pod's credentials are the ServiceAccount's: the API server says who it is.
    who = plane.kubectl(
        "auth", "whoami", "-o", "json", f"--kubeconfig={_pod_kubeconfig(kubelet, pod)}"
    ).stdout
    username = json.loads(who)["status"]["userInfo"]["username"]
    assert username == f"system:serviceaccount:{NAMESPACE}:{release}"
    # This pod's log only: an operator pod of an earlier module that was stopped by
    # `helm uninstall` logs Forbidden and Unauthorized while it leaves the peering, because helm
    # deletes its ClusterRoleBinding and ServiceAccount while the pod still shuts down.
    log = kubelet.log_of(NAMESPACE, pod["metadata"]["name"]).read_text()
    assert "Forbidden" not in log and "Unauthorized" not in log, log[-3000:]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"scaling": {"minReplicas": 5, "maxReplicas": 2}},
            "minReplicas must not exceed maxReplicas",
        ),
        ({"handler": "examples.ai_service:handle"}, "set spec.model or spec.handler, not both"),
        ({"stream": None}, "spec.stream: Required value"),
    ],
    ids=["max-below-min", "model-and-handler", "no-stream"],
)
def test_the_api_server_refuses_invalid_stream_consumers(
    plane: ControlPlane,
    kubelet: LocalKubelet,
    release: str,
    redis_server: RedisServer,
    patch: dict[str, object],
    message: str,
) -> None:
    namespace = "invalid"
    plane.kubectl("create", "namespace", namespace, check=False)
    body = f.stream_consumer("bad", redis_server.url, stream="bad", group="bad")
    for key, value in patch.items():
        if value is None:
            del body["spec"][key]
        elif isinstance(value, dict):
            body["spec"][key].update(value)
        else:
            body["spec"][key] = value
    result = plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(body), check=False)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr
    # Refused by the API server: nothing was stored, so the operator never saw it.
    listing = plane.kubectl("get", "stc", "-n", namespace, "-o", "json").stdout
    assert json.loads(listing)["items"] == []
    assert f"{namespace}/bad" not in f.operator_log(kubelet, plane, NAMESPACE, release)


def _pod_kubeconfig(kubelet: LocalKubelet, pod: dict[str, object]) -> str:
    meta = pod["metadata"]
    assert isinstance(meta, dict)
    run = kubelet.runs[meta["uid"]]
    return str(run.env["KUBECONFIG"])
