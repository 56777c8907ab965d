"""The consumer's Prometheus metrics (names in constants.py; design.md is the contract)."""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from streamscale.consumer import constants as c

LABELS = ("namespace", "name", "stream", "group")

# Batches and sinks take milliseconds to seconds; end-to-end spans backlogs of minutes.
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
E2E_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class StreamMetrics:
    """The children of every family bound to one stream's label values."""

    def __init__(self, families: ConsumerMetrics, values: tuple[str, str, str, str]) -> None:
        self.stored = families.messages.labels(*values, c.OUTCOME_STORED)
        self.dead_lettered = families.messages.labels(*values, c.OUTCOME_DEAD_LETTERED)
        self.retried = families.messages.labels(*values, c.OUTCOME_RETRIED)
        self.batch_seconds = families.batch.labels(*values)
        self.sink_seconds = families.sink.labels(*values)
        self.end_to_end_seconds = families.end_to_end.labels(*values)
        self.inflight_messages = families.inflight.labels(*values)
        self.group_missing = families.missing.labels(*values)


class ConsumerMetrics:
    """The metric families, and children bound to each stream this consumer reads."""

    def __init__(
        self, namespace: str, name: str, streams: list[str], group: str,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:  # fmt: skip
        self.messages = _family(
            registry, Counter, c.MESSAGES_TOTAL, "Messages by outcome.", (*LABELS, "outcome")
        )
        self.batch = _family(
            registry, Histogram, c.BATCH_SECONDS, "Read-to-ack time of a batch.", LABELS,
            buckets=FAST_BUCKETS,
        )  # fmt: skip
        self.sink = _family(
            registry, Histogram, c.SINK_SECONDS, "Time the sink took for a batch.", LABELS,
            buckets=FAST_BUCKETS,
        )  # fmt: skip
        self.end_to_end = _family(
            registry, Histogram, c.END_TO_END_SECONDS,
            "From the entry ID's timestamp to the commit of its row.", LABELS,
            buckets=E2E_BUCKETS,
        )  # fmt: skip
        self.inflight = _family(
            registry, Gauge, c.INFLIGHT_MESSAGES, "Messages read and not yet acked.", LABELS
        )
        self.missing = _family(
            registry, Gauge, c.GROUP_MISSING,
            "1 while consuming is stopped: the group was destroyed, the stream still has entries.",
            LABELS,
        )  # fmt: skip
        # Bound up front: every stream's series exist (at 0) from the start.
        self.streams = {
            stream: StreamMetrics(self, (namespace, name, stream, group)) for stream in streams
        }

    def of(self, stream: str) -> StreamMetrics:
        """The children of `stream` (one of the streams given at start)."""
        return self.streams[stream]


_FAMILIES: dict[tuple[int, str], Counter | Gauge | Histogram] = {}
M = TypeVar("M", Counter, Gauge, Histogram)


def _family(
    registry: CollectorRegistry,
    kind: type[M],
    name: str,
    doc: str,
    labels: tuple[str, ...],
    **kwargs: Any,
) -> M:
    """One family per registry and name, so several consumers in one process share it."""
    key = (id(registry), name)
    family = _FAMILIES.get(key)
    if family is None:
        family = _FAMILIES[key] = kind(name, doc, labels, registry=registry, **kwargs)
    assert isinstance(family, kind)
    return family
