"""One process's shutdown: asked to stop, past its deadline, or stopped for good by a broken sink.

Every loop (readers, the claimer, a batch retrying its write) watches the same object, so a
SIGTERM, the end of the grace period and a sink that can never work again are each one event.
"""

from __future__ import annotations

import asyncio

from streamscale.core.errors import ConfigError


class Shutdown:
    """The three ways consuming ends, shared by every task of one consumer process."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        """Set on SIGTERM (or a fatal error): no new reads; in-flight batches finish."""
        self.expired = asyncio.Event()
        """Set at the shutdown deadline: stop retrying, leave what is unfinished pending."""
        self.broken: ConfigError | None = None
        """Why the sink cannot work any more (a column dropped under us): the process exits 2."""

    @property
    def requested(self) -> bool:
        return self.stopping.is_set()

    def stop(self) -> bool:
        """Ask every loop to stop reading; False if that was already asked."""
        if self.stopping.is_set():
            return False
        self.stopping.set()
        return True

    def expire(self) -> None:
        """The grace period is over: retries give up, unfinished entries stay pending."""
        self.expired.set()

    def fail(self, error: ConfigError) -> None:
        """Stop consuming for good: no retry can fix the sink, the entries stay pending."""
        if self.broken is None:
            self.broken = error
        self.stopping.set()
