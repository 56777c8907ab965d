"""Task helpers: every long-lived task's failure is logged, not lost; one signal wiring."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

logger = logging.getLogger(__name__)


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Start `coro` as a named task whose crash is logged with its traceback."""
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_report)
    return task


def _report(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logger.error("task %s failed", task.get_name(), exc_info=exc)


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until they are gone."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event | Callable[[], object]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM set `stop` (or call it) instead of killing the process.

    The one signal wiring of every streamscale process: a signal only asks for a stop, and the
    caller then shuts down in its own order (the consumer drains its batches first). A callable
    is called on every signal, so it must be safe to call again.

    Inside a running loop only. The handlers are removed on exit, so a second Ctrl-C after the
    block ends interrupts as usual. Platforms without loop signal handlers keep the defaults.
    """
    callback = stop.set if isinstance(stop, asyncio.Event) else stop
    loop = asyncio.get_running_loop()
    installed = []
    for signum in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, callback)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
