"""A local Kubernetes control plane for e2e tests: etcd, kube-apiserver, kube-controller-manager.

The binaries come from `tools/k8s/build.sh` (`make cluster-bins`): our own build of pinned
releases, cached outside the repository. Everything listens on free 127.0.0.1 ports and lives in
one temporary directory; `ControlPlane.close()` stops the processes and removes it.

The API server enforces RBAC and signs service-account tokens (TokenRequest), so a pod run by the
local kubelet (`tests/e2e/kubelet.py`) acts with exactly its ServiceAccount's permissions. The
test itself is `admin` (group `system:masters`) through a static token.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "k8s" / "build.sh"
BUILD_TIMEOUT = 3600
START_TIMEOUT = 60.0
CONTROLLERS = [
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "namespace-controller",
]
Json = dict[str, Any]


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def cluster_bins() -> Path:
    """The directory with etcd, kube-apiserver, kube-controller-manager, kubectl and helm.

    Builds them on first use (minutes, cold); later calls find them in the cache at once.
    """
    started = time.monotonic()
    result = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed:\n{result.stderr[-4000:]}")
    lines = result.stdout.strip().splitlines()
    if time.monotonic() - started > 30:
        print(result.stderr)  # the build's timings, once, when it did build
    return Path(lines[-1])


class Api:
    """JSON calls to the API server with one bearer token (stdlib only: any thread can use it)."""

    def __init__(self, server: str, token: str, ca_file: Path) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self._ssl = ssl.create_default_context(cafile=str(ca_file))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Json:
        url = self.server + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        text = self._send(request, timeout)
        result: Json = json.loads(text) if text else {}
        return result

    def text(self, path: str, timeout: float = 10) -> str:
        """GET a non-JSON path (`/readyz`, `/version`) as text."""
        request = urllib.request.Request(self.server + path)
        request.add_header("Authorization", f"Bearer {self.token}")
        return self._send(request, timeout)

    def _send(self, request: urllib.request.Request, timeout: float) -> str:
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._ssl) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as exc:
            raise ApiError(
                exc.code, request.get_method(), request.full_url, exc.read().decode()
            ) from None

    def get(self, path: str, **params: str) -> Json:
        return self.request("GET", path, params=params or None)

    def get_or_none(self, path: str) -> Json | None:
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def post(self, path: str, body: Json) -> Json:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, patch: Json) -> Json:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def delete(self, path: str, body: Json | None = None) -> Json | None:
        try:
            return self.request("DELETE", path, body)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager in one temporary directory."""

    def __init__(self, bins: Path) -> None:
        self.bins = bins
        self.dir = Path(tempfile.mkdtemp(prefix="streamscale-k8s-"))
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.token = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.startup_seconds = 0.0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        # The API server's self-signed serving chain (leaf + its own CA), written at start-up.
        return self.dir / "certs" / "apiserver.crt"

    def api(self, token: str | None = None) -> Api:
        return Api(self.server, token or self.token, self.ca_file)

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [str(self.bins / name), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
            )

    def start(self) -> None:
        started = time.monotonic()
        self._keys()
        self._spawn(
            "etcd",
            [
                "--name=e2e",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-cluster=e2e=http://127.0.0.1:{self.etcd_peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        (self.dir / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.dir / 'certs'}",
                f"--token-auth-file={self.dir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.dir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.dir / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--enable-priority-and-fairness=false",
                "--endpoint-reconciler-type=none",
                "--v=1",
            ],
        )
        self._write_kubeconfig()
        deadline = time.monotonic() + START_TIMEOUT
        self._wait(deadline, "kube-apiserver to be ready", self._ready)
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--leader-elect=false",
                "--secure-port=0",
                "--concurrent-deployment-syncs=5",
                "--concurrent-replicaset-syncs=5",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        self._wait(deadline, "the default ServiceAccount", self._default_sa)
        self.startup_seconds = time.monotonic() - started

    def _keys(self) -> None:
        key, pub = self.dir / "sa.key", self.dir / "sa.pub"
        for args in (
            ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
            ["pkey", "-in", str(key), "-pubout", "-out", str(pub)],
        ):
            subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    def _ready(self) -> bool:
        if not self.ca_file.exists():
            return False
        try:
            return self.api().text("/readyz", timeout=5).strip() == "ok"
        except (OSError, ApiError, ssl.SSLError):
            return False

    def _default_sa(self) -> bool:
        return (
            self.api().get_or_none("/api/v1/namespaces/default/serviceaccounts/default") is not None
        )

    def _wait(self, deadline: float, what: str, check: Any) -> None:
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")
            with contextlib.suppress(ValueError):  # the API's self-signed cert not yet written
                if check():
                    return
            time.sleep(0.2)
        raise TimeoutError(f"waiting for {what}; logs in {self.logs}")

    def _write_kubeconfig(self) -> None:
        # The CA file appears once the API server has generated its serving certificate; the
        # kubeconfig refers to it by path, which kubectl, helm and kopf all read.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
            "current-context": "e2e",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))

    def token_kubeconfig(self, path: Path, token: str, namespace: str) -> Path:
        """A kubeconfig for `token` (a pod's ServiceAccount), CA inlined."""
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {"server": self.server, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": "pod", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "pod",
                    "context": {"cluster": "e2e", "user": "pod", "namespace": namespace},
                }
            ],
            "current-context": "pod",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def env(self) -> dict[str, str]:
        """Environment for kubectl and helm: this cluster's kubeconfig, helm's own dirs."""
        path = os.environ.get("PATH", "")
        return {
            **os.environ,
            "PATH": f"{self.bins}:{path}",
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.dir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.dir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.dir / "helm" / "data"),
        }

    def run(
        self, tool: str, *args: str, check: bool = True, timeout: float = 120, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run `kubectl` or `helm` (ours, from the cache) against this cluster."""
        result = subprocess.run(
            [str(self.bins / tool), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, **kwargs)

    def helm(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, **kwargs)

    def close(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if os.environ.get("STREAMSCALE_E2E_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_control_plane(bins: Path | None = None) -> Iterator[ControlPlane]:
    plane = ControlPlane(bins or cluster_bins())
    try:
        plane.start()
        yield plane
    finally:
        plane.close()
