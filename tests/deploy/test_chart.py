"""The Helm chart, rendered by a real helm and checked against Kubernetes' own schemas.

Every values file in `charts/streamscale/ci/` is linted (`--strict`) and rendered for several
Kubernetes minor versions; each object is validated with kubernetes-validate (strict: unknown
fields fail), except the Prometheus Operator's kinds, which it does not know and which get a
structural check, and StreamConsumers, which are validated against the CRD's openAPIV3Schema.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml

from streamscale.cli.main import cli
from streamscale.operator import constants as operator_constants
from streamscale.operator.deployment import build_deployment
from streamscale.operator.settings import OperatorSettings
from streamscale.operator.specs import parse
from tests.support.helm import CHART, REPO, helm, helm_binary, template, values_table

CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
KUBE_VERSIONS = ("1.29.0", "1.33.0", "1.37.0")
CRD_FILE = CHART / "crds" / "streamconsumers.yaml"
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
PEERING_KINDS = {"ClusterKopfPeering", "KopfPeering"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
RBAC_KINDS = {"Role", "ClusterRole"}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# Restricted Pod Security Standard: the only volume types it allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.fixture(scope="module", autouse=True)
def _helm() -> None:
    helm_binary()


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def render_all() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for path in CI_VALUES:
        yield path.stem, template([path])


def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = doc["kind"]
    if kind == "Pod":
        yield doc["spec"]
    elif kind == "CronJob":
        yield doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif kind in WORKLOAD_KINDS:
        yield doc["spec"]["template"]["spec"]


def find(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"expected one {kind} *{name_suffix}, got {len(matches)}"
    return matches[0]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    )
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def crd_schema() -> dict[str, Any] | None:
    """The StreamConsumer openAPIV3Schema of the served version, when the CRD exists yet."""
    if not CRD_FILE.exists():
        return None
    crd = yaml.safe_load(CRD_FILE.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v.get("served", True) and v.get("storage")]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def validate_streamconsumer(doc: dict[str, Any]) -> None:
    """Against the CRD's schema (jsonschema ignores the x-kubernetes-* extensions)."""
    assert doc["apiVersion"] == "streamscale.io/v1alpha1"
    assert doc["kind"] == "StreamConsumer"
    schema = crd_schema()
    if schema is None:
        assert {"stream", "group"} <= set(doc["spec"]), "spec.stream and spec.group are required"
        return
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.Draft7Validator(schema).validate(body)


def check_monitoring_object(doc: dict[str, Any]) -> None:
    """kubernetes-validate does not know monitoring.coreos.com: a minimal structural check."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["metadata"]["name"] and doc["metadata"]["namespace"]
    spec = doc["spec"]
    if doc["kind"] == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        assert spec["endpoints"] and all(e["port"] for e in spec["endpoints"])
    elif doc["kind"] == "PodMonitor":
        assert spec["selector"]["matchLabels"]
        assert spec["podMetricsEndpoints"] and all(e["port"] for e in spec["podMetricsEndpoints"])
    else:
        assert spec["groups"]
        for group in spec["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert rule.get("alert") or rule.get("record")
                assert isinstance(rule["expr"], str) and rule["expr"].strip()


def check_peering_object(doc: dict[str, Any]) -> None:
    """kubernetes-validate does not know kopf.dev either: the kind must be one crds/ ships."""
    shipped = {
        (crd["spec"]["group"], crd["spec"]["names"]["kind"], crd["spec"]["scope"])
        for crd in yaml.safe_load_all((CHART / "crds" / "kopfpeerings.yaml").read_text())
        if crd
    }
    scope = "Namespaced" if "namespace" in doc["metadata"] else "Cluster"
    assert doc["apiVersion"] == "kopf.dev/v1"
    assert ("kopf.dev", doc["kind"], scope) in shipped
    assert doc["metadata"]["name"]
    assert set(doc) <= {"apiVersion", "kind", "metadata", "status"}


# --- lint and Kubernetes schemas --------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_lint_strict(values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "--values", str(values), "--namespace", "shop")
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=ids(CI_VALUES))
def test_rendered_objects_validate(values: Path, kube_version: str) -> None:
    docs = template([values], kube_version=kube_version, include_crds=True)
    assert docs, "the chart rendered nothing"
    seen = set()
    for doc in docs:
        kind = doc["kind"]
        seen.add(kind)
        if kind in MONITORING_KINDS:
            check_monitoring_object(doc)
        elif kind in PEERING_KINDS:
            check_peering_object(doc)
        elif kind == "StreamConsumer":
            validate_streamconsumer(doc)
        else:
            try:
                kubernetes_validate.validate(doc, kube_version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(p) for p in error.path)
                pytest.fail(f"{kind}/{doc['metadata']['name']} at {where}: {error.message}")
    assert {"Deployment", "Service"} <= seen


def test_chart_requires_a_supported_kubernetes() -> None:
    failed = helm("template", "rel", str(CHART), "--kube-version", "1.27.0", check=False)
    assert failed.returncode != 0
    assert "kubeVersion" in failed.stderr, failed.stderr


# --- security ---------------------------------------------------------------------------------


def test_every_workload_meets_the_restricted_pod_security_standard() -> None:
    checked = 0
    for case, docs in render_all():
        for doc in docs:
            for spec in pod_specs(doc):
                where = f"{case}: {doc['kind']}/{doc['metadata']['name']}"
                check_restricted(spec, where)
                checked += 1
    assert checked >= len(CI_VALUES), "no workload was checked"


def check_restricted(spec: dict[str, Any], where: str) -> None:
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        if host == "hostUsers":
            assert spec.get(host, False) is False or spec.get(host) is None, where
        else:
            assert not spec.get(host, False), f"{where}: {host}"
    for volume in spec.get("volumes", []):
        types = set(volume) - {"name"}
        assert types <= RESTRICTED_VOLUMES, f"{where}: volume {volume['name']} is {types}"
    pod_sc = spec.get("securityContext", {})
    assert pod_sc.get("runAsUser", 1) != 0, f"{where}: pod runs as root"
    assert not pod_sc.get("sysctls"), f"{where}: sysctls"
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        cwhere = f"{where} container {container['name']}"
        sc = container.get("securityContext", {})
        assert sc.get("privileged", False) is False, f"{cwhere}: privileged"
        assert sc.get("allowPrivilegeEscalation") is False, f"{cwhere}: privilege escalation"
        assert sc.get("readOnlyRootFilesystem") is True, f"{cwhere}: writable root filesystem"
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{cwhere}: root"
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        assert user is not None and user != 0, f"{cwhere}: runAsUser {user}"
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), f"{cwhere}: seccomp"
        caps = sc.get("capabilities", {})
        assert "ALL" in caps.get("drop", []), f"{cwhere}: capabilities not dropped"
        assert set(caps.get("add", [])) <= {"NET_BIND_SERVICE"}, f"{cwhere}: capabilities added"
        assert sc.get("procMount", "Default") == "Default", cwhere
        for port in container.get("ports", []):
            assert not port.get("hostPort"), f"{cwhere}: hostPort"
        assert container.get("resources", {}).get("requests"), f"{cwhere}: no resource requests"


def test_no_rbac_rule_has_a_wildcard() -> None:
    rules_seen = 0
    for case, docs in render_all():
        for doc in docs:
            if doc["kind"] not in RBAC_KINDS:
                continue
            for rule in doc["rules"]:
                rules_seen += 1
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    for item in rule.get(field, []):
                        assert "*" not in item, f"{case}: {doc['kind']} {field} {item!r}"
                assert not rule.get("nonResourceURLs"), case
    assert rules_seen


def test_no_rbac_rule_grants_a_resource_twice() -> None:
    """One rule per (group, resource): a repeated grant hides which block really needs it."""
    roles_seen = 0
    for case, docs in render_all():
        for doc in docs:
            if doc["kind"] not in RBAC_KINDS:
                continue
            roles_seen += 1
            seen: set[tuple[str, str]] = set()
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        key = (group, resource)
                        assert key not in seen, f"{case}: {doc['kind']} grants {key} twice"
                        seen.add(key)
    assert roles_seen


def rules_by_resource(doc: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in doc["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_cluster_wide_rbac_grants_what_kopf_and_streamscale_need() -> None:
    docs = template()
    role = find(docs, "ClusterRole")
    grants = rules_by_resource(role)
    assert grants[("apiextensions.k8s.io", "customresourcedefinitions")] == {"list", "watch"}
    assert grants[("", "namespaces")] == {"list", "watch"}
    for peering in ("clusterkopfpeerings", "kopfpeerings"):
        assert grants[("kopf.dev", peering)] == {"get", "list", "watch", "patch"}
    assert grants[("", "events")] == {"create"}
    sc_verbs = {"get", "list", "watch", "patch", "update"}
    assert grants[("streamscale.io", "streamconsumers")] == sc_verbs
    assert {"patch", "update"} <= grants[("streamscale.io", "streamconsumers/status")]
    assert grants[("streamscale.io", "streamconsumers/finalizers")] == {"update"}
    assert grants[("apps", "deployments")] == {
        "get", "list", "watch", "create", "patch", "update", "delete",
    }  # fmt: skip
    assert grants[("", "pods")] == {"list", "watch", "patch"}  # patch: pod-deletion-cost
    assert grants[("", "secrets")] == {"get"}
    binding = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    [subject] = binding["subjects"]
    sa = find(docs, "ServiceAccount")
    assert (subject["name"], subject["namespace"]) == (sa["metadata"]["name"], "default")
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    source = (CHART / "templates" / "rbac.yaml").read_text()
    source += (CHART / "templates" / "_rbac.tpl").read_text()
    assert "# --- kopf:" in source and "# --- streamscale:" in source


def test_namespaced_rbac_makes_a_role_in_each_watched_namespace() -> None:
    docs = template([CHART / "ci" / "namespaced-rbac-values.yaml"], namespace="streamscale")
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    bindings = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {"shop", "billing"}
    for namespace, role in roles.items():
        grants = rules_by_resource(role)
        assert ("streamscale.io", "streamconsumers") in grants
        assert grants[("kopf.dev", "kopfpeerings")] == {"get", "list", "watch", "patch"}
        assert ("kopf.dev", "clusterkopfpeerings") not in grants
        [subject] = bindings[namespace]["subjects"]
        assert subject["namespace"] == "streamscale"
    env = {e["name"]: e.get("value") for e in operator_container(docs)["env"]}
    assert env["STREAMSCALE_SCANNING"] == "false"
    command = operator_container(docs)["command"]
    assert command == [
        "streamscale", "operate", "--namespace", "shop", "--namespace", "billing",
    ]  # fmt: skip


# --- the operator Deployment ------------------------------------------------------------------


def test_operator_deployment_defaults() -> None:
    docs = template()
    deployment = find(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65532
    container = operator_container(docs)
    assert container["command"] == ["streamscale", "operate", "--all-namespaces"]
    assert container["image"] == "streamscale:0.1.0"
    env = {e["name"]: e for e in container["env"]}
    assert env["STREAMSCALE_LOG_FORMAT"]["value"] == "json"
    assert env["STREAMSCALE_HTTP_PORT"]["value"] == "8080"
    assert "STREAMSCALE_REDIS_URL" not in env
    assert "STREAMSCALE_SCANNING" not in env
    assert env["STREAMSCALE_CONSUMER_IMAGE"]["value"] == container["image"]
    peering = find(docs, "ClusterKopfPeering")
    assert env["STREAMSCALE_PEERING_NAME"]["value"] == peering["metadata"]["name"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["securityContext"]["runAsUser"] == 65532
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]
    service = find(docs, "Service", "-metrics")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["operator.watchNamespaces={shop,billing}", "redis.url=redis://r:6379/0"],
        ["operator.streamConsumerLabel=rel"],
    ],
)
def test_operator_command_and_env_are_what_streamscale_operate_reads(sets: list[str]) -> None:
    """The rendered command parses with the real CLI; every variable is an operator setting."""
    container = operator_container(template(sets=sets))
    program, command, *args = container["command"]
    assert program == "streamscale"
    operate = cli.get_command(click.Context(cli), command)
    assert operate is not None, f"no command {command!r}"
    context = operate.make_context(command, list(args))
    assert bool(context.params["namespaces"]) != context.params["all_namespaces"]
    settings = {f"STREAMSCALE_{name.upper()}" for name in OperatorSettings.model_fields}
    for env in container["env"]:
        if env["name"].startswith("STREAMSCALE_"):
            assert env["name"] in settings, f"{env['name']} is no operator setting"


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["redis.url=redis://r:6379/0"], {"value": "redis://r:6379/0"}),
        (
            ["redis.existingSecret=rs", "redis.existingSecretKey=u"],
            {"valueFrom": {"secretKeyRef": {"name": "rs", "key": "u"}}},
        ),
        (["demoRedis.enabled=true"], {"value": "redis://rel-streamscale-redis.shop.svc:6379/0"}),
        (
            [r"redis.url=redis+sentinel://s-0:26379\,s-1:26379/streams/0"],
            {"value": "redis+sentinel://s-0:26379,s-1:26379/streams/0"},
        ),
        (
            [r"redis.url=rediss+cluster://n-0:6379\,n-1:6379"],
            {"value": "rediss+cluster://n-0:6379,n-1:6379"},
        ),
    ],
    ids=["plain", "secret", "demo", "sentinel", "cluster"],
)
def test_redis_url_comes_from_a_value_a_secret_or_the_demo_redis(
    sets: list[str], expected: dict[str, Any]
) -> None:
    container = operator_container(template(sets=sets, namespace="shop"))
    [env] = [e for e in container["env"] if e["name"] == "STREAMSCALE_REDIS_URL"]
    assert {k: v for k, v in env.items() if k != "name"} == expected


def test_labels_and_two_releases_in_one_namespace_do_not_collide() -> None:
    values = [CHART / "ci" / "example-redis-values.yaml", CHART / "ci" / "monitoring-values.yaml"]
    sets = ["redis.url=", "operator.watchNamespaces={shop}", "rbac.clusterWide=false"]
    first = template(values, sets=sets, release="one", namespace="shop")
    second = template(values, sets=sets, release="two", namespace="shop")

    def keys(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {
            (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in docs
        }

    assert not keys(first) & keys(second)
    for doc in first:
        labels = doc["metadata"]["labels"]
        for key in ("name", "instance", "version", "component", "managed-by"):
            assert f"app.kubernetes.io/{key}" in labels, f"{doc['kind']} lacks {key}"
        assert labels["app.kubernetes.io/instance"] == "one"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_cluster_scoped_names_differ_between_namespaces() -> None:
    for kind in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
        first = find(template(namespace="a"), kind)["metadata"]["name"]
        second = find(template(namespace="b"), kind)["metadata"]["name"]
        assert first != second


def test_peering_object_follows_the_operator_scope() -> None:
    docs = template(sets=["operator.watchNamespaces={shop,billing}"], namespace="ops")
    peerings = [d for d in docs if d["kind"] in PEERING_KINDS]
    assert {(d["kind"], d["metadata"]["namespace"]) for d in peerings} == {
        ("KopfPeering", "shop"),
        ("KopfPeering", "billing"),
    }
    env = {e["name"]: e.get("value") for e in operator_container(docs)["env"]}
    assert {d["metadata"]["name"] for d in peerings} == {env["STREAMSCALE_PEERING_NAME"]}

    standalone = template(sets=["operator.peering.enabled=false"])
    assert not [d for d in standalone if d["kind"] in PEERING_KINDS]
    env = {e["name"]: e.get("value") for e in operator_container(standalone)["env"]}
    assert env["STREAMSCALE_STANDALONE"] == "true"
    assert "STREAMSCALE_PEERING_NAME" not in env


def test_values_yaml_documents_every_value() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = undocumented_keys(lines)
    assert not undocumented, f"values without a `# --` comment: {undocumented}"


def test_readme_values_table_is_current() -> None:
    readme = (CHART / "README.md").read_text()
    assert values_table() in readme, "regenerate it: .venv/bin/python tests/support/helm.py"


def undocumented_keys(lines: list[str]) -> list[str]:
    """Keys that neither carry a `# --` comment nor have only documented children."""
    entries: list[tuple[int, str, bool, int]] = []  # indent, key, documented, line number
    comment_block: list[str] = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            comment_block.append(stripped)
            continue
        match = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if match:
            documented = any(c.startswith("# --") for c in comment_block)
            entries.append((len(match.group(1)), match.group(2), documented, number))
        comment_block = []
    missing: list[str] = []

    def walk(start: int, end: int, path: str) -> bool:
        """Checks entries[start:end] of one level; True when all of them are documented."""
        ok = True
        i = start
        while i < end:
            indent, key, documented, _ = entries[i]
            j = i + 1
            while j < end and entries[j][0] > indent:
                j += 1
            if not documented and (j == i + 1 or not walk(i + 1, j, f"{path}{key}.")):
                missing.append(f"{path}{key}")
                ok = False
            i = j
        return ok

    walk(0, len(entries), "")
    # A parent is reported with its undocumented children: keep only the leaves of the report.
    return [m for m in missing if not any(o.startswith(m + ".") for o in missing)]


# --- the schema and the guards ----------------------------------------------------------------

WRONG_VALUES = [
    "operator.httpPort=http",
    "rbac.clusterWide=maybe",
    "image.pullPolicy=Sometimes",
    "operator.logFormat=xml",
    "operator.replicas=2",
    "metrics.serviceMonitor.interval=soon",
    "service.port=-1",
    "redis.url=postgres://nope",
    # A password in a plain value ends up in the operator's Deployment for anyone who can read it.
    "redis.url=redis://:secret@r:6379/0",
    "redis.url=rediss://streamscale:secret@r:6380/0",
    "redis.url=redis://r:6379/0?password=secret",
    "redis.url=redis+sentinel://s:26379/streams/0?sentinel_password=secret",
    "redis.url=redis+cluster://app:secret@n:6379",
    "redis.url=redis+nonsense://n:6379",
    "operator.watchNamespaces=shop",
    "dashboards.enabled=yes",
    "nonsense=1",
]


@pytest.mark.parametrize("wrong", WRONG_VALUES)
def test_schema_rejects_wrong_values(wrong: str) -> None:
    flag = "--set-string" if wrong.endswith(("=maybe", "=yes", "=shop")) else "--set"
    rendered = helm("template", "rel", str(CHART), flag, wrong, check=False)
    assert rendered.returncode != 0, f"helm template accepted {wrong}"
    assert "schema" in rendered.stderr, rendered.stderr
    linted = helm("lint", "--strict", str(CHART), flag, wrong, check=False)
    assert linted.returncode != 0, f"helm lint accepted {wrong}"


GUARDS = [
    (["redis.url=redis://r:6379", "redis.existingSecret=s"], "are both set"),
    (["demoRedis.enabled=true", "redis.url=redis://r:6379"], "only use one Redis"),
    (["rbac.clusterWide=false"], "operator.watchNamespaces is empty"),
    (["example.enabled=true"], "the operator has no Redis"),
    (["example.enabled=true", "demoRedis.enabled=true"], "example.databaseSecret is empty"),
    (
        [
            "example.enabled=true",
            "demoRedis.enabled=true",
            "example.databaseSecret=pg",
            "operator.watchNamespaces={other}",
        ],
        "is not in operator.watchNamespaces",
    ),
]


@pytest.mark.parametrize(("sets", "message"), GUARDS, ids=[g[1] for g in GUARDS])
def test_guards_reject_combinations_the_schema_cannot_express(
    sets: list[str], message: str
) -> None:
    args = ["template", "rel", str(CHART)]
    for item in sets:
        args += ["--set", item]
    result = helm(*args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_notes_tell_the_next_steps() -> None:
    result = helm(
        "install", "rel", str(CHART), "--dry-run=client", "--namespace", "shop",
        "--values", str(CHART / "ci" / "example-redis-values.yaml"),
    )  # fmt: skip
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n shop rollout status deployment/rel-streamscale" in notes
    assert "kubectl -n shop get stc rel-streamscale-example" in notes
    assert "redis-cli XADD orders" in notes


# --- monitoring objects -----------------------------------------------------------------------


def test_monitoring_objects() -> None:
    docs = template([CHART / "ci" / "monitoring-values.yaml"], namespace="streamscale")
    service_monitor = find(docs, "ServiceMonitor")
    service = find(docs, "Service", "-metrics")
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    [endpoint] = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["honorLabels"] is True
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    pod_monitor = find(docs, "PodMonitor")
    # The labels and port name the operator gives every consumer pod it owns.
    selector = pod_monitor["spec"]["selector"]["matchLabels"]
    assert selector == {operator_constants.LABEL_NAME: operator_constants.CONSUMER_APP}
    [pod_endpoint] = pod_monitor["spec"]["podMetricsEndpoints"]
    assert pod_endpoint["port"] == operator_constants.METRICS_PORT_NAME
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": ["shop"]}

    rule = find(docs, "PrometheusRule")
    plain = yaml.safe_load((CHART / "alerts" / "streamscale.rules.yaml").read_text())
    assert rule["spec"]["groups"] == plain["groups"]


def test_dashboards_ship_as_sidecar_configmaps_from_the_json_files() -> None:
    docs = template([CHART / "ci" / "monitoring-values.yaml"])
    maps = [d for d in docs if d["kind"] == "ConfigMap"]
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(maps) == len(files) >= 2
    shipped = {key: value for m in maps for key, value in m["data"].items()}
    for path in files:
        assert json.loads(shipped[path.name]) == json.loads(path.read_text())
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "Streams"}
    templates = (CHART / "templates" / "dashboards.yaml").read_text()
    assert ".Files.Get" in templates and '"panels"' not in templates


def test_optional_parts_are_off_by_default() -> None:
    kinds = {d["kind"] for d in template()}
    assert kinds == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment",
        "ClusterKopfPeering",
    }  # fmt: skip


# --- the CRD and StreamConsumers --------------------------------------------------------------


def test_crd_ships_untouched_from_crds() -> None:
    if not CRD_FILE.exists():
        pytest.skip("charts/streamscale/crds/streamconsumers.yaml is not written yet")
    shown = helm("show", "crds", str(CHART)).stdout
    assert CRD_FILE.read_text().strip() in shown
    rendered = template(include_crds=True)
    crd = yaml.safe_load(CRD_FILE.read_text())
    assert crd in rendered
    assert not list((CHART / "templates").glob("*crd*")), "the CRD belongs in crds/ only"


def test_chart_example_streamconsumer_matches_the_crd() -> None:
    docs = template([CHART / "ci" / "example-redis-values.yaml"], namespace="shop")
    example = find(docs, "StreamConsumer")
    validate_streamconsumer(example)
    assert example["spec"]["database"]["urlSecretRef"] == {
        "name": "streamscale-postgres",
        "key": "url",
    }


EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml") if not p.name.startswith("values"))
EXAMPLE_VALUES = sorted((REPO / "examples").glob("values*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=ids(EXAMPLES))
def test_example_streamconsumers_match_the_crd(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    consumers = [d for d in docs if d.get("kind") == "StreamConsumer"]
    for doc in consumers:
        validate_streamconsumer(doc)
    for doc in docs:
        if doc.get("kind") not in ("StreamConsumer", None):
            kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("values", EXAMPLE_VALUES, ids=ids(EXAMPLE_VALUES))
def test_example_values_lint_and_validate(values: Path) -> None:
    helm("lint", "--strict", str(CHART), "--values", str(values), "--namespace", "streamscale")
    for doc in template([values], namespace="streamscale"):
        if doc["kind"] in MONITORING_KINDS:
            check_monitoring_object(doc)
        elif doc["kind"] in PEERING_KINDS:
            check_peering_object(doc)
        else:
            kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)


def test_consumer_deployment_the_operator_builds_is_restricted_and_scraped() -> None:
    """The operator's consumer pods: restricted PSS, valid, and selected by the PodMonitor."""
    body = yaml.safe_load((REPO / "examples" / "streamconsumer.yaml").read_text())
    body["metadata"].update(namespace="shop", uid="0f2b6a4e-0000-4000-8000-000000000001")
    spec = parse("shop", body["metadata"]["name"], body["spec"])
    deployment = build_deployment(
        spec,
        body,
        replicas=2,
        default_image="streamscale:0.1.0",
        default_redis_url="redis://redis:6379/0",
    )
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(deployment, version, strict=True)
    check_restricted(deployment["spec"]["template"]["spec"], "operator's consumer Deployment")
    docs = template([CHART / "ci" / "monitoring-values.yaml"])
    pod_monitor = find(docs, "PodMonitor")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [endpoint] = pod_monitor["spec"]["podMetricsEndpoints"]
    ports = {
        p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]
    }
    assert endpoint["port"] in ports


def test_packaged_chart_ships_rules_dashboards_and_crds_but_no_test_files(tmp_path: Path) -> None:
    helm("package", str(CHART), "--destination", str(tmp_path))
    [package] = tmp_path.glob("streamscale-*.tgz")
    with tarfile.open(package) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames()}
    assert {"alerts/streamscale.rules.yaml", "dashboards/overview.json", "values.schema.json"} <= (
        names
    )
    assert "crds/streamconsumers.yaml" in names
    assert not [n for n in names if n.startswith("ci/") or n.endswith(".test.yaml")]
    args = [
        "template",
        "rel",
        str(package),
        "--values",
        str(CHART / "ci" / "monitoring-values.yaml"),
    ]
    docs = [d for d in yaml.safe_load_all(helm(*args).stdout) if d]
    assert {"PrometheusRule", "ConfigMap"} <= {d["kind"] for d in docs}


def test_production_values_set_no_default_redis_the_operator_would_refuse() -> None:
    """A Secret-held default Redis has a password, which the operator never puts in a Deployment.

    So every StreamConsumer without spec.redis would be refused: the production example names
    the Redis in each StreamConsumer (spec.redis.urlSecretRef) instead.
    """
    values = REPO / "examples" / "values-production.yaml"
    container = operator_container(template([values], namespace="streamscale"))
    assert "STREAMSCALE_REDIS_URL" not in {e["name"] for e in container["env"]}
    assert "urlSecretRef" in values.read_text(), "say where the Redis URL goes instead"


def test_a_release_label_splits_stream_consumers_between_releases() -> None:
    """Two releases in one namespace: each operator acts only on StreamConsumers labelled so."""
    sets = [
        "operator.streamConsumerLabel=rel",
        "demoRedis.enabled=true",
        "example.enabled=true",
        "example.databaseSecret=pg",
    ]
    docs = template(sets=sets)
    env = {item["name"]: item for item in operator_container(docs)["env"]}
    assert env["STREAMSCALE_OPERATOR_LABEL"]["value"] == "rel"
    example = find(docs, "StreamConsumer")
    assert example["metadata"]["labels"]["streamscale.io/operator"] == "rel"
    assert "STREAMSCALE_OPERATOR_LABEL" not in {
        item["name"] for item in operator_container(template(sets=[]))["env"]
    }


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("redis://r:6379/0", True),
        ("rediss://r:6380/0", True),
        ("unix:///run/redis.sock", True),
        ("redis+sentinel://s-0:26379,s-1:26379/streams/0", True),
        ("rediss+sentinel://s-0:26379/streams", True),
        ("redis+cluster://n-0:6379,n-1:6379", True),
        ("rediss+cluster://n-0:6379", True),
        ("http://r:6379", False),
        ("redis+nonsense://r:6379", False),
    ],
)
def test_crd_accepts_sentinel_and_cluster_urls_in_spec_redis_url(url: str, accepted: bool) -> None:
    doc = {
        "apiVersion": "streamscale.io/v1alpha1",
        "kind": "StreamConsumer",
        "spec": {
            "stream": "{orders}", "group": "writers", "redis": {"url": url},
            "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
        },
    }  # fmt: skip
    if accepted:
        validate_streamconsumer(doc)
    else:
        with pytest.raises(jsonschema.ValidationError, match="does not match"):
            validate_streamconsumer(doc)
