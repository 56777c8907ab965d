"""Exponential backoff with full jitter, and a state tracker that logs once per change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random


class Backoff:
    """Delays of `base * 2**n`, capped, with full jitter (AWS architecture blog's variant)."""

    def __init__(self, base: float = 0.1, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0

    async def sleep(self, stop: asyncio.Event | None = None) -> None:
        """Wait the next delay, or less if `stop` is set meanwhile."""
        delay = self.next_delay()
        if stop is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


class Health:
    """A named dependency's state; logs one line when it goes down and one when it recovers."""

    def __init__(self, name: str, logger: logging.Logger) -> None:
        self.name = name
        self.logger = logger
        self.ok = True
        self.last_error = ""

    def failed(self, exc: BaseException, what: str) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.ok:
            self.ok = False
            self.logger.warning(
                "%s unavailable (%s): %s; retrying with backoff, nothing is acked meanwhile",
                self.name,
                what,
                self.last_error,
            )

    def recovered(self) -> None:
        if not self.ok:
            self.ok = True
            self.logger.info("%s available again", self.name)
