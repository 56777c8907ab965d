"""Handler mode's sink on a real Redis: outcomes, replies, the in-flight cap, the rate limit."""

from __future__ import annotations

import asyncio
import decimal
import itertools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from streamscale.consumer.messages import Message
from streamscale.consumer.settings import ConsumerSettings
from streamscale.consumer.sinks.handler import (
    IN_REPLY_TO_FIELD,
    HandlerError,
    HandlerSink,
    Reject,
    batch,
    is_batch_handler,
    load,
)
from streamscale.core.errors import TransientError


def msg(num: int, reply_to: str | None = None, /, **payload: Any) -> Message:
    fields = {b"data": orjson.dumps(payload)}
    if reply_to:
        fields[b"reply_to"] = reply_to.encode()
    return Message(f"{1000 + num}-0", fields, payload)


def sink(redis: aioredis.Redis, func: Callable[..., Any], **settings: Any) -> HandlerSink:
    return HandlerSink(ConsumerSettings(handler="tests:unused", **settings), redis, func)


async def replies(redis: aioredis.Redis, stream: str) -> list[tuple[str, Any]]:
    entries = await redis.xrange(stream)
    return [
        (fields[IN_REPLY_TO_FIELD.encode()].decode(), orjson.loads(fields[b"data"]))
        for _id, fields in entries
    ]


async def test_async_handler_replies_go_to_each_messages_reply_to(redis, names):
    alice, bob = names("ai_to_user:alice"), names("ai_to_user:bob")

    async def echo(message: Message) -> dict[str, str]:
        return {"response": "Echo: " + message.payload["text"]}

    batch_ = [msg(1, alice, text="hi"), msg(2, bob, text="yo"), msg(3, alice, text="again")]
    result = await sink(redis, echo).write(batch_)
    assert result.rejected == {} and result.retry == set()
    assert await replies(redis, alice) == [
        ("1001-0", {"response": "Echo: hi"}),
        ("1003-0", {"response": "Echo: again"}),
    ]
    assert await replies(redis, bob) == [("1002-0", {"response": "Echo: yo"})]


async def test_reply_to_may_come_from_the_json_payload(redis, names):
    target = names("replies")

    def echo(message: Message) -> str:
        return message.payload["text"].upper()

    result = await sink(redis, echo).write([msg(1, None, text="hey", reply_to=target)])
    assert result.rejected == {} and result.retry == set()
    assert await replies(redis, target) == [("1001-0", "HEY")]


async def test_reject_dead_letters_and_other_errors_retry(redis, names):
    target = names("replies")

    async def picky(message: Message) -> str | None:
        kind = message.payload["kind"]
        if kind == "bad":
            raise Reject("kind must not be bad")
        if kind == "flaky":
            raise RuntimeError("the outside API said 500")
        return "ok"

    batch_ = [msg(1, target, kind="good"), msg(2, target, kind="bad"), msg(3, target, kind="flaky")]
    result = await sink(redis, picky).write(batch_)
    assert result.rejected == {"1002-0": "kind must not be bad"}
    assert result.retry == {"1003-0"}
    assert await replies(redis, target) == [("1001-0", "ok")]


async def test_transient_error_makes_the_whole_batch_wait(redis):
    async def down(message: Message) -> None:
        raise TransientError("the outside API is down")

    with pytest.raises(TransientError):
        await sink(redis, down).write([msg(1), msg(2)])


async def test_a_reply_to_a_non_stream_key_is_rejected_not_retried_forever(redis, names):
    wrong = names("a-string")
    await redis.set(wrong, "not a stream")

    async def echo(message: Message) -> str:
        return "hello"

    result = await sink(redis, echo).write([msg(1, wrong)])
    assert list(result.rejected) == ["1001-0"]
    assert "WRONGTYPE" in result.rejected["1001-0"]


async def test_batch_handlers_by_decorator_and_by_annotation(redis, names):
    target = names("replies")
    calls: list[int] = []

    @batch
    async def by_decorator(messages):  # type: ignore[no-untyped-def]
        calls.append(len(messages))
        return [m.payload["n"] * 10 for m in messages]

    def by_annotation(messages: list[Message]) -> dict[str, Any]:
        calls.append(len(messages))
        return {messages[0].id: Reject("first one is bad"), messages[1].id: "fine"}

    assert is_batch_handler(by_decorator) and is_batch_handler(by_annotation)
    assert not is_batch_handler(lambda message: None)

    result = await sink(redis, by_decorator).write([msg(n, target, n=n) for n in range(3)])
    assert result.rejected == {} and result.retry == set()
    assert [body for _id, body in await replies(redis, target)] == [0, 10, 20]

    result = await sink(redis, by_annotation).write([msg(n, target, n=n) for n in range(3)])
    assert result.rejected == {"1000-0": "first one is bad"} and result.retry == set()
    assert calls == [3, 3]


async def test_a_failing_batch_handler_retries_the_whole_batch(redis):
    @batch
    def broken(messages: Any) -> None:
        raise ValueError("boom")

    result = await sink(redis, broken).write([msg(1), msg(2)])
    assert result.retry == {"1001-0", "1002-0"} and result.rejected == {}


async def test_max_inflight_caps_concurrent_calls_of_sync_and_async_handlers(redis):
    active = 0
    peak = 0
    lock = threading.Lock()

    def slow_sync(message: Message) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1

    the_sink = sink(redis, slow_sync, max_inflight=3)
    result = await the_sink.write([msg(n) for n in range(12)])
    assert result.retry == set()
    assert peak == 3 and the_sink.peak_inflight == 3

    # More threads than the loop's default pool (min(32, cpus + 4)) when the cap asks for it:
    # 40 calls can only pass a 40-party barrier if all 40 run at the same time.
    barrier = threading.Barrier(40, timeout=10)

    def together(message: Message) -> None:
        barrier.wait()

    the_sink = sink(redis, together, max_inflight=40)
    result = await the_sink.write([msg(n) for n in range(40)])
    await the_sink.close()
    assert result.retry == set() and the_sink.peak_inflight == 40

    async def slow_async(message: Message) -> None:
        await asyncio.sleep(0.01)

    the_sink = sink(redis, slow_async, max_inflight=5)
    await asyncio.gather(*(the_sink.write([msg(n) for n in range(10)]) for _ in range(3)))
    assert the_sink.peak_inflight == 5


async def test_rate_limit_spaces_calls(redis):
    stamps: list[float] = []

    async def record(message: Message) -> None:
        stamps.append(time.monotonic())

    the_sink = sink(redis, record, rate_limit=50.0)
    started = time.monotonic()
    await the_sink.write([msg(n) for n in range(11)])
    # 11 calls at 50/s: the first at once, then one every 20 ms.
    assert time.monotonic() - started >= 0.19
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.015


def test_load_explains_what_is_wrong():
    with pytest.raises(HandlerError, match="module:function"):
        load("no_colon_here")
    with pytest.raises(HandlerError, match="cannot import module 'nope_not_a_module'"):
        load("nope_not_a_module:handle")
    with pytest.raises(HandlerError, match="has no attribute 'missing'"):
        load("examples.ai_service:missing")
    with pytest.raises(HandlerError, match="not a callable"):
        load("examples.ai_service:DELAY_SECONDS")
    assert callable(load("examples.ai_service:handle"))


async def test_a_reply_that_is_not_json_is_dead_lettered_with_why_not_stored_as_its_repr(
    redis, names
):
    stream = names("replies")

    def odd(message: Message) -> object:
        if message.payload["kind"] == "object":
            return {"value": object()}
        return {"price": decimal.Decimal("1.50"), "tags": {"a"}}

    result = await sink(redis, odd).write(
        [msg(1, stream, kind="object"), msg(2, stream, kind="ok")]
    )
    assert set(result.rejected) == {"1001-0"}
    assert "not JSON-serialisable" in result.rejected["1001-0"]
    assert await replies(redis, stream) == [("1002-0", {"price": "1.50", "tags": ["a"]})]


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_handler_raising_system_exit_fails_that_message_only(redis, is_async):
    def leave(message: Message) -> None:
        if message.payload["n"] == 1:
            sys.exit(3)

    async def leave_async(message: Message) -> None:
        leave(message)

    result = await sink(redis, leave_async if is_async else leave).write([msg(1, n=1), msg(2, n=2)])
    assert result.retry == {"1001-0"}
    assert result.errors == {"1001-0": "SystemExit: 3"}


async def test_failures_are_logged_once_per_batch_with_the_errors_counted(redis, caplog):
    def explode(message: Message) -> None:
        raise RuntimeError("handler exploded")

    result = await sink(redis, explode).write([msg(n, n=n) for n in range(200)])
    assert len(result.retry) == 200
    assert set(result.errors.values()) == {"RuntimeError: handler exploded"}
    lines = [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]
    assert lines == [
        "handler failed on 200 of 200 messages (left pending, redelivered later): "
        "200 x RuntimeError: handler exploded"
    ]
