"""The consumer's Prometheus metrics (names in constants.py; design.md is the contract)."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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
            registry, BatchHistogram, c.END_TO_END_SECONDS,
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


class BatchHistogram(Collector):
    """A Prometheus histogram whose children also take a whole batch of observations at once.

    The end-to-end latency is observed for every message; prometheus_client's Histogram takes
    a lock and walks its buckets per call (about 0.5 µs per message, bench/README.md), this
    takes one call per batch. Exposed exactly like a Histogram (`_bucket`, `_count`, `_sum`).
    Children are updated and collected on the event loop's thread only.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._upper = (*sorted(float(b) for b in buckets), math.inf)
        self._children: dict[tuple[str, ...], BatchHistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> BatchHistogramChild:
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = BatchHistogramChild(self._upper)
        return child

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        bounds = [floatToGoString(b) for b in self._upper]
        for values, child in list(self._children.items()):
            cumulative = itertools.accumulate(child.counts)
            family.add_metric(
                list(values),
                buckets=list(zip(bounds, cumulative, strict=True)),
                sum_value=child.sum,
            )
        yield family


class BatchHistogramChild:
    """One label set's bucket counts (not cumulative) and sum."""

    __slots__ = ("_upper", "_within_ms", "counts", "sum")

    def __init__(self, upper: tuple[float, ...]) -> None:
        self._upper = upper
        self._within_ms = tuple(_within_ms(u) for u in upper)
        self.counts = [0] * len(upper)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Sequence[float]) -> None:
        """Count each value in the first bucket whose upper bound (`le`) it does not exceed."""
        counts, upper, find = self.counts, self._upper, bisect.bisect_left
        for value in values:
            counts[find(upper, value)] += 1
        self.sum += math.fsum(values)

    def observe_elapsed(self, now_ms: int, since_ms: list[int]) -> None:
        """Observe the seconds from each of `since_ms` to `now_ms` (0 for one after it).

        The same as `observe_many` of `max(0, now_ms - t) / 1000`, without a division and a
        bucket search per message: sorted, the instants fall into the buckets by one bisection
        per bucket, and the sum is integer arithmetic.
        """
        stamps = sorted(since_ms)  # usually in order already (entry IDs): one linear pass
        seen, counts, find = 0, self.counts, bisect.bisect_left
        for i, within_ms in enumerate(self._within_ms):
            # At most `within_ms` ago: from the first instant at or after now - within_ms.
            cumulative = (
                len(stamps) if within_ms is None else len(stamps) - find(stamps, now_ms - within_ms)
            )
            counts[i] += cumulative - seen
            seen = cumulative
        past = bisect.bisect_right(stamps, now_ms)  # those after now count 0 s
        self.sum += (past * now_ms - sum(stamps[:past])) / 1000


def _within_ms(upper: float) -> int | None:
    """The most whole milliseconds `d` with `d / 1000 <= upper` (None: no limit)."""
    if upper * 1000 >= 2**53:  # beyond any two instants' distance (and float's whole numbers)
        return None
    limit = math.floor(upper * 1000)
    while (limit + 1) / 1000 <= upper:
        limit += 1
    while limit / 1000 > upper:
        limit -= 1
    return limit


_FAMILIES: dict[tuple[int, str], Any] = {}
M = TypeVar("M", Counter, Gauge, Histogram, BatchHistogram)


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
