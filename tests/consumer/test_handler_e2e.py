"""Handler mode through the real consumer process: retries, max-deliveries, Reject, batches.

The handlers live in this module; the consumer process imports them as
`tests.consumer.test_handler_e2e:...`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from streamscale.consumer.messages import Message
from streamscale.consumer.sinks.handler import Reject

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def picky(message: Message) -> dict[str, object] | None:
    """Sync, one message per call: `ok` replies, `bad` is rejected, `flaky` always fails."""
    kind = (message.payload or {}).get("kind")
    if kind == "bad":
        raise Reject("kind bad is never valid")
    if kind == "flaky":
        raise RuntimeError("the outside API answered 503")
    return {"kind": kind, "handled": True}


def exploding(message: Message) -> None:
    """Sync: `exit` calls sys.exit (a handler bug that must not end the consumer), else raises."""
    if (message.payload or {}).get("kind") == "exit":
        sys.exit(3)
    raise RuntimeError("handler exploded")


async def doubler(messages: list[Message]) -> list[object]:
    """Async batch handler (by annotation): one reply per message, in order."""
    return [(m.payload or {}).get("n", 0) * 2 for m in messages]


def tell_delivery(message: Message) -> dict[str, object]:
    """Sync: replies whether the message was delivered before."""
    return {"n": (message.payload or {}).get("n"), "redelivered": message.redelivered}


def consume(redis_url: str, stream: str, handler: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCALE_")}
    env.update(
        STREAMSCALE_REDIS_URL=redis_url,
        STREAMSCALE_CLAIM_INTERVAL_MS="200",
        STREAMSCALE_LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [str(BIN / "streamscale"), "consume", "--stream", stream, "--group", "g",
         "--consumer", "w", "--handler", handler, "--http-port", "0", "--block-ms", "100",
         "--claim-idle-ms", "200", "--max-deliveries", "2"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


async def wait_until(check, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


async def test_outcomes_through_the_consumer(redis_server, redis, names):
    stream, replies = names("jobs"), names("replies")
    for kind in ("ok", "bad", "flaky", "ok"):
        await redis.xadd(stream, {"data": orjson.dumps({"kind": kind}), "reply_to": replies})
    proc = consume(redis_server.url, stream, "tests.consumer.test_handler_e2e:picky")
    try:

        async def settled() -> bool:
            groups = await redis.xinfo_groups(stream)
            return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0

        await wait_until(settled)
    finally:
        stop(proc)
    assert [orjson.loads(f[b"data"]) for _id, f in await redis.xrange(replies)] == [
        {"kind": "ok", "handled": True}
    ] * 2
    dead = {f[b"x-reason"].decode(): f for _id, f in await redis.xrange(stream + ":dlq")}
    assert set(dead) == {"invalid", "max-deliveries"}
    assert dead["invalid"][b"x-error"] == b"kind bad is never valid"
    assert orjson.loads(dead["max-deliveries"][b"data"]) == {"kind": "flaky"}
    assert int(dead["max-deliveries"][b"x-deliveries"]) >= 2


async def test_batch_handler_through_the_consumer(redis_server, redis, names):
    stream, replies = names("numbers"), names("doubled")
    for n in range(50):
        await redis.xadd(stream, {"data": orjson.dumps({"n": n}), "reply_to": replies})
    proc = consume(redis_server.url, stream, "tests.consumer.test_handler_e2e:doubler")
    try:

        async def all_replied() -> bool:
            return int(await redis.xlen(replies)) >= 50

        await wait_until(all_replied)
    finally:
        stop(proc)
    doubled = sorted(orjson.loads(f[b"data"]) for _id, f in await redis.xrange(replies))
    assert doubled == [2 * n for n in range(50)]


async def test_a_handler_sees_which_messages_were_delivered_before(redis_server, redis, names):
    """A consumer restarted with entries of its own pending (it crashed before acking them)
    hands them over as redelivered; new entries are not."""
    stream, replies = names("jobs"), names("replies")
    await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    for n in range(3):
        await redis.xadd(stream, {"data": orjson.dumps({"n": n}), "reply_to": replies})
    await redis.xreadgroup("g", "w-1", {stream: ">"}, count=3)  # then w-1 crashed
    proc = consume(redis_server.url, stream, "tests.consumer.test_handler_e2e:tell_delivery")
    try:

        async def replied(count: int) -> bool:
            return int(await redis.xlen(replies)) >= count

        await wait_until(lambda: replied(3))
        for n in range(3, 5):
            await redis.xadd(stream, {"data": orjson.dumps({"n": n}), "reply_to": replies})
        await wait_until(lambda: replied(5))
    finally:
        stop(proc)
    seen = [orjson.loads(f[b"data"]) for _id, f in await redis.xrange(replies)]
    assert {r["n"]: r["redelivered"] for r in seen} == {
        0: True,
        1: True,
        2: True,
        3: False,
        4: False,
    }


def test_a_wrong_handler_path_stops_the_consumer_with_a_clear_message(redis_server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCALE_")}
    env.update(
        STREAMSCALE_REDIS_URL=redis_server.url,
        STREAMSCALE_HANDLER="examples.ai_service:no_such_function",
        STREAMSCALE_HTTP_PORT="0",
    )
    result = subprocess.run(
        [str(BIN / "python"), "-m", "streamscale.consumer"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "has no attribute 'no_such_function'" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_failing_handler_logs_per_batch_and_dead_letters_keep_the_real_error(
    redis_server, redis, names
):
    stream = names("exploding")
    count = 300
    for n in range(count):
        kind = "exit" if n == 0 else "boom"
        await redis.xadd(stream, {"data": orjson.dumps({"kind": kind, "n": n})})
    proc = consume(redis_server.url, stream, "tests.consumer.test_handler_e2e:exploding")
    try:

        async def all_dead() -> bool:
            return int(await redis.xlen(stream + ":dlq")) >= count

        await wait_until(all_dead, timeout=60)
    finally:
        out = stop(proc)  # still running: SystemExit in the handler did not end the consumer
    dead = [f for _id, f in await redis.xrange(stream + ":dlq")]
    assert {f[b"x-reason"] for f in dead} == {b"max-deliveries"}
    errors = sorted({f[b"x-error"].decode() for f in dead})
    assert errors == [
        "delivered more than 2 times without being acked; last error: RuntimeError: handler"
        " exploded",
        "delivered more than 2 times without being acked; last error: SystemExit: 3",
    ]
    # Each message failed at least twice (2 x 300 failures): one line per batch, not per failure.
    failure_lines = [line for line in out.splitlines() if "handler failed on" in line]
    assert 1 <= len(failure_lines) <= 30, len(failure_lines)
    assert "Traceback" not in out
