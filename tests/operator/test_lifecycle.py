"""`streamscale operate` starting and stopping: a missing peering resource, a clean SIGTERM."""

from __future__ import annotations

import asyncio
import pathlib
import signal
from collections.abc import Callable
from typing import Any

import kmock
import kopf
import pytest

from streamscale.operator.reconciling import PeeringMissing
from streamscale.operator.running import operate
from tests.support import kube as h
from tests.support.servers import RedisServer


def consumer_spec(stream: str, url: str) -> dict[str, Any]:
    return {
        "stream": stream,
        "group": "writers",
        "redis": {"url": url},
        "database": h.DATABASE,
        "consumer": {"image": "streamscale:test"},
        "scaling": {"pollSeconds": 0.2},
    }


async def test_without_the_peering_resource_the_operator_stops_and_says_what_to_do(
    kmock: kmock.KubernetesEmulator,
    redis_server: RedisServer,
    names: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    h.declare_resources(kmock)  # no kopf.dev resources
    kmock.objects[h.STC, h.NAMESPACE, "orders"] = h.stream_consumer(
        "orders", consumer_spec(names("orders"), redis_server.url)
    )

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(kmock.url).rstrip("/"))

    settings = h.settings(redis_server.url, standalone=False)
    with pytest.raises(PeeringMissing) as raised:
        await asyncio.wait_for(
            operate([h.NAMESPACE], settings=settings, login=login, serve_http=False), 20
        )
    message = str(raised.value)
    assert "kopfpeerings.kopf.dev" in message
    assert "charts/streamscale/crds/kopfpeerings.yaml" in message
    assert "STREAMSCALE_STANDALONE=true" in message
    assert any("kopfpeerings.kopf.dev" in r.getMessage() for r in caplog.records)


async def test_sigterm_stops_the_operator_cleanly_with_one_line(
    kmock: kmock.KubernetesEmulator,
    redis_server: RedisServer,
    names: Callable[[str], str],
    tmp_path: pathlib.Path,
) -> None:
    h.declare_resources(kmock)
    for name in ("orders", "payments"):
        kmock.objects[h.STC, h.NAMESPACE, name] = h.stream_consumer(
            name, consumer_spec(names(name), redis_server.url)
        )
    log = tmp_path / "operator.log"
    proc = h.start_operator(h.operator_env(kmock, redis_server.url, tmp_path), tmp_path, log)
    try:
        for name in ("orders", "payments"):
            await h.eventually(lambda name=name: h.status(kmock, name).get("replicas") == 0, 30)
        started = log.read_text(errors="replace")
        proc.send_signal(signal.SIGTERM)
        for _ in range(300):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stopping = log.read_text(errors="replace")[len(started) :]
    assert "escalate" not in stopping
    assert [line for line in stopping.splitlines() if line.strip()] == [
        next(line for line in stopping.splitlines() if line.strip())
    ], stopping
