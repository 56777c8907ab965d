"""A local kubelet for the e2e tests: pods of the streamscale image run as local processes.

It registers one Node, binds every pending pod to it (there is no scheduler), and runs each pod
whose container image is a streamscale image the way the image would: the `streamscale` console
script of this checkout's venv with the container's command/args. What a real kubelet provides and
streamscale relies on is reproduced; the rest is left out on purpose:

- env from `value`, `fieldRef` (metadata.name, metadata.namespace, spec.nodeName,
  spec.serviceAccountName, status.podIP) and `secretKeyRef` (read from the API);
- the pod's ServiceAccount: a TokenRequest token bound to the pod, in a kubeconfig the process
  finds through KUBECONFIG, so the pod has exactly that account's RBAC;
- the container's ports remapped to free 127.0.0.1 ports (STREAMSCALE_HTTP_PORT follows);
- status Running, and Ready from the readiness probe (httpGet);
- deletion: SIGTERM, SIGKILL after the grace period, then the pod object is removed;
- restartPolicy Always: an exited process restarts with a doubling backoff (1 s .. 10 s);
- one log file per pod (`<namespace>_<pod>.log`, restarts appended).

Not reproduced: volumes, resources, security contexts, liveness probes, other images (such a pod
stays Pending with a reason).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.cluster import ApiError, ControlPlane, Json
from tests.support.servers import free_port, http_get

REPO = Path(__file__).resolve().parents[2]
STREAMSCALE = REPO / ".venv" / "bin" / "streamscale"
NODE = "e2e-node"
POLL_SECONDS = 0.3
PROBE_SECONDS = 1.0
BACKOFF_FIRST, BACKOFF_CAP = 1.0, 10.0
TOKEN_SECONDS = 3600
logger = logging.getLogger(__name__)


def is_streamscale_image(image: str) -> bool:
    """`streamscale:1.0`, `registry.example/team/streamscale@sha256:...` and the like."""
    last = image.rsplit("/", 1)[-1]
    return last.split("@", 1)[0].split(":", 1)[0] == "streamscale"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Run:
    """One pod's process and what the kubelet knows about it."""

    namespace: str
    name: str
    uid: str
    dir: Path
    argv: list[str]
    env: dict[str, str]
    ports: dict[str, int]  # port name or number (as text) -> local port
    probe: Json | None
    grace: float
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: str = ""
    restart_at: float = 0.0
    ready: bool = False
    probed_at: float = 0.0
    term_deadline: float | None = None
    last_exit: int | None = None
    reported: tuple[Any, ...] = field(default_factory=tuple)


class LocalKubelet:
    """Runs in a thread of the test process; `close()` stops every pod process it started."""

    def __init__(self, plane: ControlPlane, workdir: Path, node: str = NODE) -> None:
        self.plane = plane
        self.api = plane.api()
        self.node = node
        self.dir = workdir
        self.logs = workdir / "pods"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.runs: dict[str, Run] = {}
        self.refused: set[str] = set()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-kubelet", daemon=True)

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> LocalKubelet:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node}},
        }
        with contextlib.suppress(ApiError):
            self.api.post("/api/v1/nodes", node)
        self.api.merge_patch(
            f"/api/v1/nodes/{self.node}/status",
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "lastHeartbeatTime": now(),
                            "lastTransitionTime": now(),
                        }
                    ],
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                }
            },
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for run in self.runs.values():
            self._signal(run, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for run in self.runs.values():
            if run.proc is not None:
                try:
                    run.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._signal(run, signal.SIGKILL)
                    run.proc.wait(10)

    def log_of(self, namespace: str, pod: str) -> Path:
        return self.logs / f"{namespace}_{pod}.log"

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:
                self.errors.append(repr(exc))
                logger.exception("local kubelet tick failed")
            self._stop.wait(POLL_SECONDS)

    # one pass over every pod ---------------------------------------------------------------------

    def tick(self) -> None:
        pods = self.api.get("/api/v1/pods").get("items") or []
        seen: set[str] = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod["spec"]
            uid = meta["uid"]
            seen.add(uid)
            if not spec.get("nodeName"):
                if not meta.get("deletionTimestamp"):
                    self._bind(meta)
                continue
            if spec["nodeName"] != self.node:
                continue
            run = self.runs.get(uid)
            if meta.get("deletionTimestamp"):
                self._terminate(pod, run)
                continue
            if run is None:
                if uid not in self.refused:
                    self._admit(pod)
                continue
            self._supervise(pod, run)
        for uid in [u for u in self.runs if u not in seen]:  # force-deleted: kill at once
            run = self.runs.pop(uid)
            self._signal(run, signal.SIGKILL)
            if run.proc is not None:
                run.proc.wait(10)

    def _bind(self, meta: Json) -> None:
        ns, name = meta["namespace"], meta["name"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        }
        with contextlib.suppress(ApiError):  # already bound or gone: the next tick sees which
            self.api.post(f"/api/v1/namespaces/{ns}/pods/{name}/binding", binding)

    # starting -----------------------------------------------------------------------------------

    def _admit(self, pod: Json) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        containers = spec.get("containers") or []
        images = [c.get("image", "") for c in containers]
        if len(containers) != 1 or not is_streamscale_image(images[0]):
            self.refused.add(meta["uid"])
            self._patch_status(
                meta,
                {
                    "phase": "Pending",
                    "conditions": [self._cond("PodScheduled", True)],
                    "message": f"the local kubelet runs only one streamscale container: {images}",
                    "reason": "UnsupportedImage",
                },
            )
            return
        try:
            run = self._prepare(pod, containers[0])
        except (ApiError, KeyError, ValueError) as exc:
            # A missing Secret or key: retried on the next tick, like a kubelet would.
            self._patch_status(meta, {"phase": "Pending", "message": str(exc)[:300]})
            return
        self.runs[meta["uid"]] = run
        self._spawn(run)
        self._report(pod, run)

    def _prepare(self, pod: Json, container: Json) -> Run:
        meta, spec = pod["metadata"], pod["spec"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        workdir = self.dir / "run" / f"{ns}_{name}_{uid[:8]}"
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        # The image carries the user's model and handler modules; here the repository's examples/
        # stand in for them, found from the working directory like `streamscale consume` does.
        link = workdir / "examples"
        if not link.exists():
            link.symlink_to(REPO / "examples")
        ports: dict[str, int] = {}
        for port in container.get("ports") or []:
            local = free_port()
            ports[str(port["containerPort"])] = local
            if port.get("name"):
                ports[port["name"]] = local
        env = {
            "PATH": f"{STREAMSCALE.parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(workdir / "tmp"),
            "TMPDIR": str(workdir / "tmp"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "STREAMSCALE_HTTP_PORT": "8080",
            "STREAMSCALE_LOG_FORMAT": "json",
        }
        for item in container.get("env") or []:
            env[item["name"]] = self._env_value(pod, item)
        declared = env["STREAMSCALE_HTTP_PORT"]
        env["STREAMSCALE_HTTP_PORT"] = str(
            ports.get(declared) or ports.setdefault(declared, free_port())
        )
        env["STREAMSCALE_HTTP_HOST"] = "127.0.0.1"
        if spec.get("automountServiceAccountToken", True):
            account = spec.get("serviceAccountName") or "default"
            token = self.api.post(
                f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token",
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {
                        "expirationSeconds": TOKEN_SECONDS,
                        "boundObjectRef": {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "name": name,
                            "uid": uid,
                        },
                    },
                },
            )["status"]["token"]
            config = self.plane.token_kubeconfig(workdir / "kubeconfig", token, ns)
            env["KUBECONFIG"] = str(config)
        command = list(container.get("command") or ["streamscale"])
        if command[0] != "streamscale":
            raise ValueError(f"the local kubelet runs only the streamscale command, not {command}")
        argv = [str(STREAMSCALE), *command[1:], *(container.get("args") or [])]
        return Run(
            namespace=ns,
            name=name,
            uid=uid,
            dir=workdir,
            argv=argv,
            env=env,
            ports=ports,
            probe=(container.get("readinessProbe") or {}).get("httpGet"),
            grace=float(spec.get("terminationGracePeriodSeconds", 30)),
        )

    def _env_value(self, pod: Json, item: Json) -> str:
        if "value" in item:
            return str(item["value"])
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            values = {
                "metadata.name": pod["metadata"]["name"],
                "metadata.namespace": pod["metadata"]["namespace"],
                "metadata.uid": pod["metadata"]["uid"],
                "spec.nodeName": self.node,
                "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
                "status.podIP": "127.0.0.1",
            }
            if path not in values:
                raise ValueError(f"fieldRef {path} is not supported by the local kubelet")
            return str(values[path])
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            ns = pod["metadata"]["namespace"]
            secret = self.api.get(f"/api/v1/namespaces/{ns}/secrets/{ref['name']}")
            return base64.b64decode(secret["data"][ref["key"]]).decode()
        raise ValueError(f"env {item.get('name')}: unsupported source {sorted(source)}")

    def _spawn(self, run: Run) -> None:
        with self.log_of(run.namespace, run.name).open("ab") as log:
            log.write(f"--- {now()} start #{run.restarts}: {' '.join(run.argv)}\n".encode())
            log.flush()
            run.proc = subprocess.Popen(
                run.argv,
                env=run.env,
                cwd=run.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        run.started_at = now()
        run.ready = False
        run.probed_at = 0.0

    # running ------------------------------------------------------------------------------------

    def _supervise(self, pod: Json, run: Run) -> None:
        if run.proc is not None and run.proc.poll() is not None:
            run.last_exit = run.proc.returncode
            run.proc = None
            run.ready = False
            delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** min(run.restarts, 10))
            run.restart_at = time.monotonic() + delay
            run.restarts += 1
        if run.proc is None and time.monotonic() >= run.restart_at:
            self._spawn(run)
        if run.proc is not None and time.monotonic() - run.probed_at >= PROBE_SECONDS:
            run.probed_at = time.monotonic()
            run.ready = self._probe(run)
        self._report(pod, run)

    def _probe(self, run: Run) -> bool:
        if not run.probe:
            return True
        port = run.ports.get(str(run.probe.get("port")))
        if port is None:
            return False
        status, _ = http_get(port, run.probe.get("path", "/"))
        return 200 <= status < 400

    def _report(self, pod: Json, run: Run) -> None:
        running = run.proc is not None
        key = (running, run.ready, run.restarts)
        if key == run.reported:
            return
        if running:
            state: Json = {"running": {"startedAt": run.started_at}}
        else:
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"exit {run.last_exit}"}}
        container = pod["spec"]["containers"][0]
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": pod.get("status", {}).get("startTime") or now(),
            "conditions": [
                self._cond("PodScheduled", True),
                self._cond("Initialized", True),
                self._cond("ContainersReady", run.ready),
                self._cond("Ready", run.ready),
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": run.ready,
                    "started": running,
                    "restartCount": run.restarts,
                    "state": state,
                }
            ],
        }
        try:
            self._patch_status(pod["metadata"], status)
        except ApiError as exc:
            if exc.status != 404:
                raise
        run.reported = key

    @staticmethod
    def _cond(kind: str, value: bool) -> Json:
        return {"type": kind, "status": "True" if value else "False", "lastTransitionTime": now()}

    def _patch_status(self, meta: Json, status: Json) -> None:
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        self.api.merge_patch(path, {"status": status})

    # stopping -----------------------------------------------------------------------------------

    def _terminate(self, pod: Json, run: Run | None) -> None:
        meta = pod["metadata"]
        if run is not None and run.proc is not None and run.proc.poll() is None:
            if run.term_deadline is None:
                grace = meta.get("deletionGracePeriodSeconds", run.grace)
                run.term_deadline = time.monotonic() + float(grace)
                self._signal(run, signal.SIGTERM)
                return
            if time.monotonic() < run.term_deadline:
                return
            self._signal(run, signal.SIGKILL)
            run.proc.wait(10)
        if run is not None:
            with self.log_of(run.namespace, run.name).open("ab") as log:
                code = run.proc.returncode if run.proc is not None else run.last_exit
                log.write(f"--- {now()} terminated, exit {code}\n".encode())
        self.runs.pop(meta["uid"], None)
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        with contextlib.suppress(ApiError):
            self.api.delete(path, {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})

    @staticmethod
    def _signal(run: Run, signum: int) -> None:
        if run.proc is not None and run.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.proc.pid, signum)
