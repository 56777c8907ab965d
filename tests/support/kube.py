"""Run the streamscale operator in-process against kmock's Kubernetes emulator.

kopf discovers resources before it watches anything: every resource it or the handlers touch
must be declared in the emulator (with verbs), or kopf waits silently after discovery.
Preloaded objects carry `metadata.resourceVersion`, because kopf's finalizer patches are JSON
patches with a `test` operation on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import kmock
import kopf
import yaml

from streamscale.operator import constants as c
from streamscale.operator.running import operate
from streamscale.operator.settings import OperatorSettings

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "charts" / "streamscale" / "crds" / "streamconsumers.yaml"
NAMESPACE = "ns1"

STC = f"{c.GROUP}/{c.VERSION}/{c.PLURAL}"
DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
SECRETS = "v1/secrets"
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
DATABASE = {"urlSecretRef": {"name": "pg", "key": "url"}}
"""`spec.database` for table-mode StreamConsumers (the operator refuses them without one)."""


def load_crd() -> dict[str, Any]:
    docs = [doc for doc in yaml.safe_load_all(CRD_PATH.read_text()) if doc]
    assert len(docs) == 1
    crd: dict[str, Any] = docs[0]
    return crd


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    """Everything kopf and the operator touch, with kinds and verbs for kopf's discovery."""
    crd = load_crd()
    emulator.resources[STC] = kmock.ResourceInfo(
        kind=c.KIND,
        singular="streamconsumer",
        namespaced=True,
        verbs=VERBS,
        shortnames={c.SHORT_NAME},
        subresources={"status"},
    )
    emulator.resources[DEPLOYMENTS] = kmock.ResourceInfo(
        kind="Deployment", namespaced=True, verbs=VERBS, subresources={"status", "scale"}
    )
    emulator.resources[PODS] = kmock.ResourceInfo(kind="Pod", namespaced=True, verbs=VERBS)
    emulator.resources[SECRETS] = kmock.ResourceInfo(kind="Secret", namespaced=True, verbs=VERBS)
    emulator.resources["v1/events"] = kmock.ResourceInfo(kind="Event", namespaced=True, verbs=VERBS)
    emulator.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs=VERBS
    )
    emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=VERBS
    )
    emulator.objects["apiextensions.k8s.io/v1/customresourcedefinitions", None, c.CRD_NAME] = {
        **crd,
        "metadata": {**crd["metadata"], "resourceVersion": "1"},
    }


def declare(
    emulator: kmock.KubernetesEmulator, name: str, spec: Mapping[str, Any]
) -> dict[str, Any]:
    """`declare_resources`, and the StreamConsumer `name` of `spec` stored in `ns1`; its body."""
    declare_resources(emulator)
    body = stream_consumer(name, spec)
    emulator.objects[STC, NAMESPACE, name] = body
    return body


def stc_path(name: str) -> str:
    """The API path of a StreamConsumer in `ns1`."""
    return f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{NAMESPACE}/{c.PLURAL}/{name}"


def stream_consumer(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A StreamConsumer body as the API server would store it."""
    return {
        "apiVersion": f"{c.GROUP}/{c.VERSION}",
        "kind": c.KIND,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": dict(spec),
    }


def pod(name: str, instance: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "resourceVersion": "1",
            "labels": {c.LABEL_NAME: c.CONSUMER_APP, c.LABEL_INSTANCE: instance},
        },
        "status": {"phase": phase},
    }


def settings(redis_url: str | None, **overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "standalone": True,
        "move_min_idle_seconds": 0.2,
        "gone_idle_seconds": 0.2,
        "error_backoff_cap_seconds": 1.0,
        "redis_timeout_seconds": 1.0,
        "http_port": 0,
        # kmock 0.8 cannot parse `GET /api/v1/namespaces`; kopf lists it only when scanning.
        "scanning": False,
        **overrides,
    }
    return OperatorSettings(**values)


@contextlib.asynccontextmanager
async def running_operator(
    emulator: kmock.KubernetesEmulator, operator_settings: OperatorSettings
) -> AsyncIterator[None]:
    """kopf in this event loop, logged in to the emulator, namespaced to `ns1`."""
    stop, ready = asyncio.Event(), asyncio.Event()

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(emulator.url).rstrip("/"))

    task = asyncio.create_task(
        operate(
            [NAMESPACE],
            settings=operator_settings,
            login=login,
            stop_flag=stop,
            ready_flag=ready,
            serve_http=False,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Wait until `check()` returns something truthy (or an awaitable of it); return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        await asyncio.sleep(interval)


def obj(emulator: kmock.KubernetesEmulator, resource: str, name: str) -> dict[str, Any] | None:
    """The object's current state in the emulator, or None when absent or deleted."""
    try:
        found = emulator.objects[resource, NAMESPACE, name]
    except KeyError:
        return None
    return None if found.deleted else dict(found.raw)


def replicas(emulator: kmock.KubernetesEmulator, name: str) -> int | None:
    deployment = obj(emulator, DEPLOYMENTS, name)
    if deployment is None:
        return None
    return int(deployment.get("spec", {}).get("replicas") or 0)


def status(emulator: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    body = obj(emulator, STC, name) or {}
    return dict(body.get("status") or {})


def condition(emulator: kmock.KubernetesEmulator, name: str, kind: str) -> str | None:
    for item in status(emulator, name).get("conditions") or ():
        if item.get("type") == kind:
            return str(item.get("status"))
    return None


def events(emulator: kmock.KubernetesEmulator, reason: str | None = None) -> list[dict[str, Any]]:
    """Kubernetes Events the operator posted (optionally only those with `reason`).

    Read from the requests, not the stored objects: kmock 0.8 keys objects by name and kopf's
    events only have a `generateName`, so every event after the first is refused as a conflict.
    """
    found = []
    for request in list(emulator):
        resource = request.resource
        if resource is None or resource.plural != "events" or request.method != kmock.method.POST:
            continue
        data = dict(request.data or {})
        if reason is None or data.get("reason") == reason:
            found.append(data)
    return found


def write_kubeconfig(path: pathlib.Path, server: str) -> pathlib.Path:
    """A kubeconfig without credentials for the emulator (kopf's kubeconfig login reads it)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "nobody", "user": {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "nobody"}}],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_operator(
    env: dict[str, str], cwd: pathlib.Path, log: pathlib.Path
) -> subprocess.Popen[bytes]:
    """`streamscale operate --namespace ns1`, the console script as users run it.

    The console script, not `python -m`, and run outside the repository root: the root on
    sys.path would shadow the standard `operator` module.
    """
    script = pathlib.Path(sys.executable).parent / "streamscale"
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(script), "operate", "--namespace", NAMESPACE],
            env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def operator_env(
    emulator: kmock.KubernetesEmulator, redis_url: str, workdir: pathlib.Path, **settings: str
) -> dict[str, str]:
    """The environment of a `streamscale operate` process logged in to `emulator`.

    Standalone and without scanning (kmock 0.8 cannot list namespaces) unless `settings`
    (STREAMSCALE_ names without the prefix, lower case) say otherwise.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("STREAMSCALE_")}
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", str(emulator.url).rstrip("/"))
    values = {
        "redis_url": redis_url,
        "standalone": "true",
        "scanning": "false",
        "http_port": "0",
        "http_host": "127.0.0.1",
        **settings,
    }
    env.update({f"STREAMSCALE_{key.upper()}": value for key, value in values.items()})
    env["KUBECONFIG"] = str(kubeconfig)
    return env
