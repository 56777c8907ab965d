"""The task and signal helpers every streamscale process starts its work through."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from streamscale.core.tasks import cancel_all, spawn, stop_on_signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_sets_the_stop_event_and_the_process_lives_on(signum: int) -> None:
    stop = asyncio.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signum)
        await asyncio.wait_for(stop.wait(), 5)
    assert stop.is_set()


async def test_a_callable_is_called_on_every_signal() -> None:
    calls: list[str] = []
    with stop_on_signals(lambda: calls.append("stop")):
        for n in range(1, 3):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(500):
                if len(calls) == n:
                    break
                await asyncio.sleep(0.01)
    assert calls == ["stop", "stop"]


async def test_the_handlers_are_gone_after_the_block() -> None:
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals(asyncio.Event()):
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


async def test_a_crashed_task_is_logged_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    async def crash() -> None:
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, logger="streamscale.core.tasks"):
        task = spawn(crash(), name="worker")
        await asyncio.wait([task], timeout=5)
        await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert [r.getMessage() for r in caplog.records] == ["task worker failed"]
    assert caplog.records[0].exc_info is not None
    await cancel_all([task])
