"""Handler mode end to end: the shared input queue, per-user reply streams, and isolation.

Two `streamscale consume --handler examples.ai_service:handle` processes serve one group; two
users (the example client) send at the same time; each sees only their own replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from streamscale.core.streams import as_str
from tests.support.servers import free_port

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def wait_ready(port: int, timeout: float = 30) -> None:
    """Until the consumer's /readyz answers 200: started, Redis reachable, group there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = f"http://127.0.0.1:{port}/readyz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as answer:
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"consumer on port {port} not ready after {timeout}s")


def start_worker(redis_url: str, queue: str, name: str, port: int):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCALE_")}
    env.update(
        STREAMSCALE_REDIS_URL=redis_url,
        STREAMSCALE_STREAM=queue,
        STREAMSCALE_GROUP="ai_service_group",
        STREAMSCALE_HANDLER="examples.ai_service:handle",
        STREAMSCALE_HTTP_PORT=str(port),
        STREAMSCALE_HTTP_HOST="127.0.0.1",
        STREAMSCALE_BLOCK_MS="200",
        AI_SERVICE_DELAY_SECONDS="0.05",
    )
    return subprocess.Popen(
        [str(BIN / "streamscale"), "consume", "--consumer", name, "--max-inflight", "4"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def user(redis_url: str, queue: str, user_id: str, *messages: str):  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        [str(BIN / "python"), "examples/user_client.py", user_id, *messages,
         "--queue", queue, "--redis-url", redis_url, "--timeout", "40"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


async def test_alice_never_sees_bobs_replies(redis_server, redis, names):
    queue = names("user_messages_queue")
    alice, bob = names("alice"), names("bob")
    alice_says = ["Hello AI!", "How are you?", "Tell me a joke"]
    bob_says = ["Hi there!", "What's the weather?", "Tell me a story"]
    ports = [free_port(), free_port()]
    workers = [start_worker(redis_server.url, queue, f"ai-worker-{n}", ports[n]) for n in (0, 1)]
    try:
        for port in ports:
            wait_ready(port)
        users = [
            user(redis_server.url, queue, alice, *alice_says),
            user(redis_server.url, queue, bob, *bob_says),
        ]
        outputs = [u.communicate(timeout=60) for u in users]
        for u, (out, err) in zip(users, outputs, strict=True):
            assert u.returncode == 0, out + err
        # A poison message: the handler rejects it, so it is dead-lettered at once as invalid.
        await redis.xadd(queue, {"data": orjson.dumps({"user_id": alice}), "reply_to": "x"})
        for _ in range(100):
            if await redis.xlen(queue + ":dlq"):
                break
            await asyncio.sleep(0.1)
    finally:
        logs = [stop(w) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs

    alice_out, bob_out = outputs[0][0], outputs[1][0]
    assert sorted(line for line in alice_out.splitlines() if "Received" in line) == sorted(
        f"[{alice}] Received: Echo: {text}" for text in alice_says
    )
    assert sorted(line for line in bob_out.splitlines() if "Received" in line) == sorted(
        f"[{bob}] Received: Echo: {text}" for text in bob_says
    )

    # Every reply in alice's stream answers one of alice's messages, and only those.
    sent = {
        as_str(entry_id): orjson.loads(fields[b"data"])
        for entry_id, fields in await redis.xrange(queue)
    }
    for who, said in ((alice, alice_says), (bob, bob_says)):
        replies = await redis.xrange(f"ai_to_user:{who}")
        assert len(replies) == len(said)
        for _id, fields in replies:
            original = sent[fields[b"in_reply_to"].decode()]
            body = orjson.loads(fields[b"data"])
            assert original["user_id"] == who == body["user_id"]
            assert body["response"] == "Echo: " + original["message"]

    info = await redis.xinfo_groups(queue)
    assert info[0]["pending"] == 0
    [dead] = await redis.xrange(queue + ":dlq")
    assert dead[1][b"x-reason"] == b"invalid"
    assert b"needs text fields" in dead[1][b"x-error"]
