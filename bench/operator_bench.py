"""The operator benchmark: reaction time, dead-letter move rate, poll cost; one run, with targets.

Usage: python bench/operator_bench.py [--quick] [--only reaction|move|cost]

1. Reaction time. The real operator (kopf, in-process) against kmock's Kubernetes emulator
   (in a process of its own) and a throwaway redis-server, at the CRD's default
   settings (pollSeconds 5, activationBacklog 0). Several StreamConsumers are created and polled
   once; then, at a random moment of each one's poll cycle, one entry is added to its stream
   (the backlog crosses the activation threshold). The clock stops when the emulator holds the
   Deployment with `spec.replicas` >= 1. Target: at most pollSeconds + 1 s.
2. Dead-letter move rate. 100,000 entries (the product payload) pending on a consumer
   whose pod is gone, moved by the operator's mover (`reclaiming.move_stranded`: XPENDING pages
   of 1000 + the atomic Lua script). Target: at least 50,000 entries/s. Baseline, in the same
   run: a client-side mover doing what one would write without the script (XPENDING page, then
   one MULTI of XRANGE + XADD + XACK per entry, pipelined per page; not atomic against a live
   consumer's claim).
3. Poll cost. 200 StreamConsumers on one Redis at pollSeconds 5, each with a backlog, a live pod
   and pending entries; their Deployments, pods and the StreamConsumers themselves live in the
   emulator (a process of its own). 200 Pollers (the daemon's loop body: Redis reads, mover,
   scaling, status) tick every 5 s, staggered; this process's CPU time over a window divided by
   the window's wall time is the poll function's share of a core. Target: at most 20%.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import kopf
import redis.asyncio as aioredis
from common import LOGS, product

from streamscale.core.deadletter import Scripts
from streamscale.core.streams import connect
from streamscale.operator.deployment import build_deployment
from streamscale.operator.reclaiming import Rules, move_stranded
from streamscale.operator.reconciling import Poller, Runtime
from streamscale.operator.running import operate
from streamscale.operator.specs import parse
from tests.support import kube as h
from tests.support.servers import running_redis

DEFAULT_POLL = 5.0


# The emulator in a process of its own ---------------------------------------------------------


class Emulator:
    """kmock's KubernetesEmulator in a subprocess (bench/operator_emulator.py), read over HTTP.

    Its CPU and its GIL stay out of this process, so this process's CPU time is the operator's.
    """

    def __init__(self, objects: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.objects = objects
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Emulator:
        LOGS.mkdir(parents=True, exist_ok=True)
        path = LOGS / "operator-emulator-objects.json"
        path.write_text(json.dumps(self.objects))
        script = Path(__file__).resolve().parent / "operator_emulator.py"
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline)
        if not line.startswith("http"):
            raise RuntimeError("the Kubernetes emulator did not start")
        self.url = line.strip()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.session is not None:
            await self.session.close()
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    async def get(self, path: str) -> dict[str, Any] | None:
        assert self.session is not None
        async with self.session.get(self.url + path) as response:
            if response.status == 404:
                return None
            result: dict[str, Any] = await response.json()
            return result

    async def status(self, name: str) -> dict[str, Any]:
        body = await self.get(h.stc_path(name)) or {}
        return dict(body.get("status") or {})

    async def replicas(self, name: str) -> int:
        body = await self.get(f"/apis/apps/v1/namespaces/{h.NAMESPACE}/deployments/{name}") or {}
        return int((body.get("spec") or {}).get("replicas") or 0)


@contextlib.asynccontextmanager
async def operator(emulator: Emulator, redis_url: str) -> AsyncIterator[None]:
    settings = h.settings(
        redis_url,
        move_min_idle_seconds=5.0,
        error_backoff_cap_seconds=30.0,
        redis_timeout_seconds=5.0,
    )
    stop, ready = asyncio.Event(), asyncio.Event()

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=emulator.url)

    task = asyncio.create_task(
        operate(
            [h.NAMESPACE],
            settings=settings,
            login=login,
            stop_flag=stop,
            ready_flag=ready,
            serve_http=False,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def spec(stream: str, url: str, **scaling: Any) -> dict[str, Any]:
    return {
        "stream": stream,
        "group": "writers",
        "redis": {"url": url},
        "database": h.DATABASE,
        "consumer": {"image": "streamscale:bench"},
        "scaling": dict(scaling),
    }


async def wait(predicate: Any, timeout: float, what: str, interval: float = 0.01) -> None:
    """Until `await predicate()` is true."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        await asyncio.sleep(interval)


# 1. Reaction time -----------------------------------------------------------------------------


async def reaction(redis_url: str, count: int) -> dict[str, Any]:
    names = [f"react-{n}" for n in range(count)]
    objects = [
        (h.STC, name, h.stream_consumer(name, spec(f"bench-{name}", redis_url))) for name in names
    ]
    client = connect(redis_url)
    times: list[float] = []
    async with Emulator(objects) as emulator, operator(emulator, redis_url):
        for name in names:

            async def polled(n: str = name) -> bool:
                return "lag" in await emulator.status(n)

            await wait(polled, 60, f"{name} polled")

        async def one(name: str) -> None:
            await asyncio.sleep(random.uniform(0, DEFAULT_POLL))
            await client.xadd(f"bench-{name}", {"data": json.dumps(product(1))})
            started = time.monotonic()

            async def scaled() -> bool:
                return await emulator.replicas(name) >= 1

            await wait(scaled, 30, f"{name} scaled")
            times.append(time.monotonic() - started)

        await asyncio.gather(*(one(name) for name in names))
    await client.aclose()
    target = DEFAULT_POLL + 1.0
    worst = max(times)
    return {
        "samples": len(times),
        "mean_s": round(statistics.mean(times), 3),
        "max_s": round(worst, 3),
        "target_s": target,
        "ratio_max_to_target": round(worst / target, 3),
        "ok": worst <= target,
    }


# 2. Dead-letter move rate ---------------------------------------------------------------------


async def stranded(redis: aioredis.Redis, stream: str, total: int) -> None:
    """`total` product entries, all pending on consumer `gone`, idle for a moment."""
    await redis.xgroup_create(stream, "writers", id="0", mkstream=True)
    for base in range(0, total, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(base, min(total, base + 5000)):
                pipe.xadd(stream, {"data": json.dumps(product(n))})
            await pipe.execute()
        await redis.xreadgroup("writers", "gone", {stream: ">"}, count=5000)
    await asyncio.sleep(0.2)


async def naive_move(redis: aioredis.Redis, stream: str, dlq: str) -> int:
    """The baseline: a client-side move, one MULTI (XRANGE, XADD, XACK) per entry."""
    moved = 0
    start = "-"
    while True:
        page = await redis.xpending_range(stream, "writers", start, "+", 1000, idle=100)
        if not page:
            return moved
        ids = [item["message_id"] for item in page]
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(stream, entry_id, entry_id)
            entries = await pipe.execute()
        async with redis.pipeline(transaction=True) as pipe:
            for item, found in zip(page, entries, strict=True):
                fields = dict(found[0][1]) if found else {}
                fields.update(
                    {
                        b"x-original-id": item["message_id"],
                        b"x-stream": stream.encode(),
                        b"x-group": b"writers",
                        b"x-consumer": item["consumer"],
                        b"x-deliveries": str(item["times_delivered"]).encode(),
                        b"x-reason": b"idle",
                    }
                )
                pipe.xadd(dlq, fields)
                pipe.xack(stream, "writers", item["message_id"])
            await pipe.execute()
        moved += len(ids)
        start = "(" + ids[-1].decode()


async def redis_cpu(redis: aioredis.Redis) -> float:
    """redis-server's CPU seconds so far (user + system): less sensitive to a busy machine."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def move_rate(redis_url: str, total: int) -> dict[str, Any]:
    redis = connect(redis_url)
    rules = Rules(max_deliveries=5, idle_ms=300_000, min_idle_ms=100)
    await stranded(redis, "move-ours", total)
    cpu0 = await redis_cpu(redis)
    started = time.perf_counter()
    result = await move_stranded(
        Scripts(redis), "move-ours", "writers", "move-ours:dlq", gone={"gone"}, rules=rules,
        max_pages=total // 1000 + 1,
    )  # fmt: skip
    ours = time.perf_counter() - started
    ours_cpu = await redis_cpu(redis) - cpu0
    assert result.total == total, result
    assert await redis.xlen("move-ours:dlq") == total
    await stranded(redis, "move-naive", total)
    started = time.perf_counter()
    naive_moved = await naive_move(redis, "move-naive", "move-naive:dlq")
    naive = time.perf_counter() - started
    assert naive_moved == total
    await redis.aclose()
    rate, naive_rate = total / ours, total / naive
    return {
        "entries": total,
        "seconds": round(ours, 3),
        "entries_per_s": round(rate),
        "target_per_s": 50_000,
        "ratio_to_target": round(rate / 50_000, 2),
        "baseline_client_side_per_s": round(naive_rate),
        "ratio_to_baseline": round(rate / naive_rate, 2),
        "redis_cpu_s": round(ours_cpu, 3),
        "entries_per_redis_cpu_s": round(total / ours_cpu) if ours_cpu else None,
        "ok": rate >= 50_000,
    }


# 3. Poll cost ---------------------------------------------------------------------------------


async def poll_cost(redis_url: str, count: int, window: float) -> dict[str, Any]:
    """The poll function itself: `count` Pollers ticking every pollSeconds, staggered.

    Not through kopf: kmock's emulator needs ~20 ms per PATCH with a few hundred objects, so a
    cold start of 200 StreamConsumers under kopf drowns it in the creation burst (Deployments,
    finalizers, annotations). The poll loop is what runs for hours; it is measured alone here,
    against the same emulator, with every object (StreamConsumer, Deployment, pod) preloaded.
    """
    redis = connect(redis_url)
    objects: list[tuple[str, str, dict[str, Any]]] = []
    bodies: dict[str, dict[str, Any]] = {}
    for n in range(count):
        name, stream = f"cost-{n}", f"cost-stream-{n}"
        await redis.xgroup_create(stream, "writers", id="0", mkstream=True)
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(200):
                pipe.xadd(stream, {"data": json.dumps(product(i))})
            await pipe.execute()
        await redis.xreadgroup("writers", f"{name}-pod", {stream: ">"}, count=50)
        body = h.stream_consumer(name, spec(stream, redis_url))
        bodies[name] = body
        objects.append((h.STC, name, body))
        objects.append((h.PODS, f"{name}-pod", h.pod(f"{name}-pod", name)))
        deployment = build_deployment(
            parse(h.NAMESPACE, name, body["spec"]),
            body,
            replicas=1,
            default_image="streamscale:bench",
            default_redis_url=redis_url,
        )
        deployment["metadata"]["resourceVersion"] = "1"
        objects.append((h.DEPLOYMENTS, name, deployment))
    settings = h.settings(redis_url, move_min_idle_seconds=5.0, redis_timeout_seconds=5.0)
    runtime = Runtime(settings)
    ticks = 0
    async with Emulator(objects) as emulator:
        await runtime.login(kopf.ConnectionInfo(server=emulator.url))
        pollers = {name: Poller(runtime, h.NAMESPACE, name, None) for name in bodies}
        for name, poller in pollers.items():  # the first round writes every status once
            await poller.tick(kopf.Body(bodies[name]))
        stop = asyncio.Event()

        async def loop(name: str, poller: Poller) -> None:
            nonlocal ticks
            await asyncio.sleep(random.uniform(0, DEFAULT_POLL))
            while not stop.is_set():
                result = await poller.tick(kopf.Body(bodies[name]))
                assert result.error is None, result.error
                ticks += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), DEFAULT_POLL)

        tasks = [asyncio.create_task(loop(name, p)) for name, p in pollers.items()]
        await asyncio.sleep(DEFAULT_POLL)  # every loop has started
        ticks = 0
        before_redis = await redis_cpu(redis)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(window)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        after_redis = await redis_cpu(redis)
        polls = ticks
        stop.set()
        await asyncio.gather(*tasks)
        await runtime.close()
    await redis.aclose()
    share = cpu / wall
    return {
        "stream_consumers": count,
        "poll_seconds": DEFAULT_POLL,
        "window_s": round(wall, 1),
        "polls": polls,
        "cpu_ms_per_poll": round(cpu / max(polls, 1) * 1000, 3),
        "process_cpu_s": round(cpu, 3),
        "cpu_share_of_one_core": round(share, 4),
        "redis_cpu_share": round((after_redis - before_redis) / wall, 4),
        "target_share": 0.20,
        "ratio_to_target": round(share / 0.20, 3),
        "ok": share <= 0.20,
    }


# Main -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    import logging  # noqa: PLC0415

    logging.basicConfig(level=logging.WARNING)
    for name in ("kopf", "aiohttp", "streamscale"):
        logging.getLogger(name).setLevel(logging.ERROR)
    yield


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with running_redis() as server:
        if args.only in (None, "move"):
            total = 20_000 if args.quick else 100_000
            results["dead_letter_move"] = await move_rate(server.url, total)
            print("dead-letter move:", json.dumps(results["dead_letter_move"]), flush=True)
        if args.only in (None, "reaction"):
            results["reaction"] = await reaction(server.url, 3 if args.quick else 6)
            print("reaction time:  ", json.dumps(results["reaction"]), flush=True)
        if args.only in (None, "cost"):
            count, window = (50, 10.0) if args.quick else (200, 30.0)
            results["poll_cost"] = await poll_cost(server.url, count, window)
            print("poll cost:      ", json.dumps(results["poll_cost"]), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer entries, shorter windows")
    parser.add_argument("--only", choices=("reaction", "move", "cost"))
    args = parser.parse_args(argv)
    with quiet():
        results = asyncio.run(main_async(args))
    ok = all(part["ok"] for part in results.values())
    print("operator benchmark:", "all targets met" if ok else "TARGET MISSED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
