"""Fixtures of the e2e tests: one local control plane and one local kubelet per session."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e import flows as f
from tests.e2e.cluster import ControlPlane, running_control_plane
from tests.e2e.kubelet import LocalKubelet
from tests.support.servers import RedisServer


@pytest.fixture(scope="session")
def plane() -> Iterator[ControlPlane]:
    """etcd, kube-apiserver and kube-controller-manager on free ports, torn down at the end."""
    with running_control_plane() as control_plane:
        print(f"\ncontrol plane up in {control_plane.startup_seconds:.1f}s ({control_plane.dir})")
        yield control_plane


@pytest.fixture(scope="session")
def kubelet(plane: ControlPlane) -> Iterator[LocalKubelet]:
    """The local kubelet: runs the pods of the streamscale image as local processes."""
    workdir = Path(tempfile.mkdtemp(prefix="kubelet-", dir=plane.dir))
    node = LocalKubelet(plane, workdir).start()
    try:
        yield node
    finally:
        node.close()
    assert not node.errors, node.errors


@pytest.fixture(scope="module")
def release(plane: ControlPlane, kubelet: LocalKubelet, redis_server: RedisServer) -> Iterator[str]:
    """The chart installed cluster-wide (`helm install --wait`), uninstalled after the module."""
    f.install(plane, f.RELEASE, f.RELEASE_NAMESPACE, redis_server.url)
    yield f.RELEASE
    plane.helm("uninstall", f.RELEASE, "-n", f.RELEASE_NAMESPACE, "--wait", "--timeout=60s")


@pytest.fixture
def namespace(plane: ControlPlane) -> Iterator[Callable[[str], str]]:
    """`namespace("flow")` creates it; all are deleted after the test, StreamConsumers first."""
    made: list[str] = []

    def make(name: str) -> str:
        plane.kubectl("create", "namespace", name)
        made.append(name)
        return name

    yield make
    for name in made:
        f.clean_namespace(plane, name)
