"""Every dashboard panel shows data scraped from real streamscale processes.

The real things run: a consumer process (`python -m streamscale.consumer`) on a real redis-server
and SQLite, the operator process (`streamscale operate --namespace NS`, the chart's command) logged
in to kmock's Kubernetes emulator, and Debian's Prometheus scraping both on loopback. Then every
panel query of every dashboard, with the template variables filled in, must return data, and
every metric a panel names must be one that the processes export. The same Prometheus loads the
chart's alert rules: they must evaluate without error, and the operator and Redis are not
reported down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import kmock
import pytest
import redis.asyncio as aioredis
import yaml

from tests.deploy.test_dashboards import queries
from tests.support import kube as h
from tests.support.consumers import ConsumerProcess, product
from tests.support.prometheus import PrometheusServer, free_port, metric_names, running_prometheus
from tests.support.servers import RedisServer

OPERATOR_JOB = "streamscale-operator"
CONSUMER_JOB = "streamscale-consumer"
RATE_INTERVAL = "20s"
"""What `$__rate_interval` stands for here: many 1 s scrapes, so every rate() has samples."""
CONSUMER_POD = "dash-consumer"
RULES = Path(__file__).resolve().parents[2] / "charts/streamscale/alerts/streamscale.rules.yaml"


def substitute(expr: str, namespace: str, name: str) -> str:
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$namespace", namespace)
        .replace("$name", name)
    )


@contextlib.asynccontextmanager
async def operator_process(
    emulator: kmock.KubernetesEmulator, redis_url: str, port: int, workdir: Path
) -> AsyncIterator[None]:
    """`streamscale operate --namespace NS`, the chart's command, logged in through a kubeconfig
    that points at the emulator (which runs in this test's event loop: never block it)."""
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "kmock", "cluster": {"server": str(emulator.url).rstrip("/")}}
                ],
                "users": [{"name": "test", "user": {}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMSCALE_")},
        "KUBECONFIG": str(kubeconfig),
        "STREAMSCALE_REDIS_URL": redis_url,
        "STREAMSCALE_HTTP_PORT": str(port),
        "STREAMSCALE_HTTP_HOST": "127.0.0.1",
        "STREAMSCALE_LOG_FORMAT": "json",
        "STREAMSCALE_STANDALONE": "true",
        # kmock cannot serve `GET /api/v1/namespaces`, which kopf's scanning lists.
        "STREAMSCALE_SCANNING": "false",
        "STREAMSCALE_MOVE_MIN_IDLE_SECONDS": "0.2",
        "STREAMSCALE_ERROR_BACKOFF_CAP_SECONDS": "1",
    }
    log = workdir / "operator.log"
    streamscale = Path(sys.executable).parent / "streamscale"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(streamscale), "operate", "--namespace", h.NAMESPACE,
            env=env, cwd=workdir, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        for _ in range(150):  # bounded: 15 s for /healthz to answer
            if process.returncode is not None:
                raise AssertionError(f"streamscale operate exited:\n{log.read_text()}")
            if await healthy(port):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"streamscale operate never served /healthz:\n{log.read_text()}")
        yield
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def healthy(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 2)
        return b" 200 " in status
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def prometheus(jobs: dict[str, list[str]]) -> AsyncIterator[PrometheusServer]:
    """running_prometheus, entered and left in a thread: the operator shares this loop."""
    stack = contextlib.ExitStack()
    server = await asyncio.to_thread(
        stack.enter_context, running_prometheus(jobs, rule_files=[RULES])
    )
    try:
        yield server
    finally:
        await asyncio.to_thread(stack.close)


async def keep_producing(client: aioredis.Redis, stream: str, stop: asyncio.Event) -> None:
    """A trickle of valid entries and an invalid one now and then, bounded in count and time."""
    for n in range(600):
        await client.xadd(stream, {"data": json.dumps(product(n))})
        if n % 5 == 0:
            await client.xadd(stream, {"data": "{not json"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
        if stop.is_set():
            return


async def missing_data(server: PrometheusServer, namespace: str, name: str) -> list[str]:
    """Panel queries (and variable queries) that return nothing yet."""
    missing = []
    for file, title, expr in queries():
        result = await asyncio.to_thread(server.query, substitute(expr, namespace, name))
        if not result:
            missing.append(f"{file}: {title}: {expr}")
    for label, metric, value in (
        ("namespace", "streamscale_group_lag", namespace),
        ("name", f'streamscale_group_lag{{namespace="{namespace}"}}', name),
    ):
        values = await asyncio.to_thread(
            server.api, f"/api/v1/label/{label}/values", {"match[]": metric}
        )
        if value not in values:
            missing.append(f"variable {label}: label_values({metric}, {label}) lacks {value}")
    return missing


@pytest.mark.timeout(120)
async def test_every_panel_shows_data_from_real_streamscale_processes(
    kmock: kmock.KubernetesEmulator,
    redis: aioredis.Redis,
    redis_server: RedisServer,
    names: Callable[[str], str],
    tmp_path: Path,
) -> None:
    stream, group, name = names("orders"), "writers", names("dash")
    namespace = h.NAMESPACE

    # Entries stranded on a consumer with no pod: the operator dead-letters them (reason label).
    # Then a backlog for 3 replicas, which the consumer drains: the operator scales down.
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    for n in range(3):
        await redis.xadd(stream, {"data": json.dumps(product(n))})
    await redis.xreadgroup(group, "ghost", {stream: ">"}, count=3)
    for n in range(30):
        await redis.xadd(stream, {"data": json.dumps(product(n))})

    h.declare_resources(kmock)
    kmock.objects[h.STC, namespace, name] = h.stream_consumer(
        name,
        {
            "stream": stream,
            "group": group,
            "redis": {"url": redis_server.url},
            "database": h.DATABASE,
            "consumer": {"image": "streamscale:test"},
            # replicaThroughput seeds the per-replica rate, so the throughput and predicted
            # drain panels have data from the second poll on: without it they wait for the
            # operator to learn one over a poll interval busy at both ends, which a consumer
            # that keeps up with this trickle may never give.
            "scaling": {"minReplicas": 0, "maxReplicas": 3, "backlogPerReplica": 5,
                        "pollSeconds": 0.5, "scaleDownStabilizationSeconds": 1,
                        "replicaThroughput": 100},
            "deadLetter": {"maxDeliveries": 5, "idleSeconds": 1},
        },
    )  # fmt: skip
    kmock.objects[h.PODS, namespace, CONSUMER_POD] = h.pod(CONSUMER_POD, name)

    consumer = ConsumerProcess(
        redis_url=redis_server.url,
        database_url=f"sqlite:///{tmp_path / 'sink.db'}",
        stream=stream,
        group=group,
        namespace=namespace,
        name=name,
        consumer=CONSUMER_POD,
        concurrency=1,
        block_ms=100,
        claim_idle_ms=600_000,
    )
    operator_port = free_port()
    stop = asyncio.Event()
    try:
        async with operator_process(kmock, redis_server.url, operator_port, tmp_path):
            await h.eventually(lambda: h.replicas(kmock, name) == 3, timeout=15)
            await asyncio.to_thread(consumer.start)
            producer = asyncio.create_task(keep_producing(redis, stream, stop))
            jobs = {
                OPERATOR_JOB: [f"127.0.0.1:{operator_port}"],
                CONSUMER_JOB: [f"127.0.0.1:{consumer.port}"],
            }
            async with prometheus(jobs) as server:
                missing: list[str] = []
                for _ in range(120):  # bounded: 60 s at most
                    missing = await missing_data(server, namespace, name)
                    if not missing:
                        break
                    await asyncio.sleep(0.5)
                known = await asyncio.to_thread(server.metric_names)
                unknown = {n for _, _, e in queries() for n in metric_names(e)} - known
                assert not unknown, f"panels name metrics no process exports: {unknown}"
                assert not missing, "panels without data:\n" + "\n".join(missing)
                # The chart's alert rules, loaded by this Prometheus, evaluate on the real series.
                rules = await asyncio.to_thread(server.rules)
                assert len(rules) == 5
                for rule in rules:
                    assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
                    if rule["name"] in ("StreamscaleOperatorDown", "StreamscaleRedisUnreachable"):
                        assert rule["state"] == "inactive", f"{rule['name']} on a healthy system"
                targets = await asyncio.to_thread(server.targets)
                assert {t["labels"]["job"] for t in targets if t["health"] == "up"} == set(jobs)
            stop.set()
            await producer
    finally:
        stop.set()
        consumer.kill()
