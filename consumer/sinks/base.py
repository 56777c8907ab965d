"""The contract every sink meets; the runner depends on nothing else."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from streamscale.consumer.messages import Message
from streamscale.core.errors import ConfigError, TransientError
from streamscale.core.streams import StreamId

__all__ = ["ConfigError", "Sink", "SinkResult", "TransientError"]


@dataclasses.dataclass
class SinkResult:
    """What became of a batch handed to `Sink.write`. Every message not named here is done."""

    rejected: dict[StreamId, str] = dataclasses.field(default_factory=dict)
    """Messages that can never succeed, with the error: dead-lettered as `invalid` and acked."""
    retry: set[StreamId] = dataclasses.field(default_factory=set)
    """Messages to leave pending, unacked: redelivered later through the claim path, and
    dead-lettered as `max-deliveries` once they have been delivered too often."""
    errors: dict[StreamId, str] = dataclasses.field(default_factory=dict)
    """Why the `retry` messages failed, kept for their dead-letter entry should they exhaust
    their deliveries (`x-error` then shows the real error, not only the count)."""


class Sink(Protocol):
    """A destination for decoded messages."""

    async def start(self) -> None:
        """Connect and create what is missing (tables); raise with a clear message if unusable."""

    async def write(self, messages: list[Message]) -> SinkResult:
        """Store or handle `messages` (all decoded, payload not None), idempotently on ID.

        Raises TransientError when nothing could be done now and the whole batch must wait.
        """
        ...

    async def ping(self) -> str | None:
        """None when reachable, else what is wrong (for `/readyz`)."""
        ...

    async def close(self) -> None:
        """Release connections."""
