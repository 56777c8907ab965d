"""The operator's Prometheus metrics; every one carries `namespace` and `name`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from streamscale.operator import constants

LABELS = ("namespace", "name")

GROUP_LAG = Gauge(constants.GROUP_LAG, "Entries not yet delivered to the consumer group.", LABELS)
GROUP_PENDING = Gauge(constants.GROUP_PENDING, "Entries delivered but not acknowledged.", LABELS)
GROUP_CONSUMERS = Gauge(constants.GROUP_CONSUMERS, "Consumers registered in the group.", LABELS)
DESIRED_REPLICAS = Gauge(constants.DESIRED_REPLICAS, "Replicas the backlog asks for.", LABELS)
REPLICAS = Gauge(constants.REPLICAS, "Replicas set on the consumer Deployment.", LABELS)


class DeadLetteredCollector(Collector):
    """`dead_lettered_total{reason}`: the Redis counters the move script keeps, as last read.

    Not a counter this process increments: moves made by an operator killed before it reported
    them still count, and a restarted operator continues the series instead of resetting it.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], Mapping[str, int]] = {}

    def set(self, namespace: str, name: str, counts: Mapping[str, int]) -> None:
        self.counts[namespace, name] = dict(counts)

    def forget(self, namespace: str, name: str) -> None:
        self.counts.pop((namespace, name), None)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            constants.DEAD_LETTERED_TOTAL,
            "Entries the operator moved to the dead-letter stream (counted in Redis by the move).",
            labels=(*LABELS, "reason"),
        )
        for (namespace, name), counts in sorted(self.counts.items()):
            for reason, value in sorted(counts.items()):
                family.add_metric((namespace, name, reason), value)
        yield family


DEAD_LETTERED = DeadLetteredCollector()
REGISTRY.register(DEAD_LETTERED)
SCALE_EVENTS = Counter(
    constants.SCALE_EVENTS_TOTAL, "Replica changes the operator made.", (*LABELS, "direction")
)
POLL_SECONDS = Histogram(
    constants.POLL_SECONDS,
    "Duration of one poll of a StreamConsumer (Redis, mover, scaling, status).",
    LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted StreamConsumer's series, so dashboards do not show it forever."""
    for metric in (
        GROUP_LAG,
        GROUP_PENDING,
        GROUP_CONSUMERS,
        DESIRED_REPLICAS,
        REPLICAS,
        POLL_SECONDS,
    ):
        with contextlib.suppress(KeyError):
            metric.remove(namespace, name)
    DEAD_LETTERED.forget(namespace, name)
