"""Rates for drain-time scaling: arrivals, service, and what one replica gets through.

Pure functions of the counters one poll reads from Redis, so the operator, the demo and the
simulation harness (`bench/scaling_sim.py`) share them:

- arrival rate: the delta of `XINFO STREAM` `entries-added` over the delta of time;
- service rate: the delta of the group's completed entries (`entries-read` minus `pending`:
  delivered and no longer pending, whether stored, dead-lettered or acked by the mover);
- throughput per replica: the service rate divided by the replicas, learned only from
  intervals in which the replicas were busy the whole time (a backlog at both ends), since an
  idle replica says nothing about how fast it could go.

Every rate is smoothed with an exponentially weighted moving average whose weight follows the
interval's length (a half-life in seconds, not in polls), so a change of the poll interval does
not change how fast the estimate follows. A counter that goes backwards (Redis restarted empty,
the stream re-created) resets the estimate: the next rates are unknown, not negative.
"""

from __future__ import annotations

import dataclasses
import math

DEFAULT_HALF_LIFE_SECONDS = 10.0
"""How quickly the smoothed rates follow a change: half the weight is on the last 10 s
(longer half-lives missed the drain target by more in `bench/scaling_sim.py`'s traces)."""


@dataclasses.dataclass(frozen=True)
class Counters:
    """What one poll read: the stream's and the group's counters, and the replicas running."""

    time: float
    """Monotonic seconds."""
    entries_added: int | None
    """`XINFO STREAM` entries-added (None before Redis 7)."""
    completed: int | None
    """The group's entries-read minus pending (None while entries-read is unknown)."""
    backlog: int
    replicas: int


@dataclasses.dataclass(frozen=True)
class Rates:
    """The smoothed rates, in entries per second; None while unknown."""

    arrival: float | None = None
    service: float | None = None
    per_replica: float | None = None

    def drain_seconds(self, backlog: int, replicas: int) -> float | None:
        """How long `replicas` take to drain `backlog` at these rates (inf when they never do)."""
        if backlog <= 0:
            return 0.0
        if self.arrival is None or self.per_replica is None:
            return None
        net = replicas * self.per_replica - self.arrival
        return backlog / net if net > 0 else math.inf


def _smooth(old: float | None, sample: float, elapsed: float, half_life: float) -> float:
    if old is None:
        return sample
    keep: float = 0.5 ** (elapsed / half_life)
    return keep * old + (1 - keep) * sample


@dataclasses.dataclass
class RateEstimator:
    """Follows one group's counters from poll to poll."""

    seed_per_replica: float | None = None
    """`spec.scaling.replicaThroughput`: the per-replica throughput until one is learned."""
    half_life: float = DEFAULT_HALF_LIFE_SECONDS
    last: Counters | None = None
    rates: Rates = dataclasses.field(default_factory=Rates)
    learned: bool = False
    """True once the per-replica throughput comes from a busy interval, not from the seed."""

    def __post_init__(self) -> None:
        if self.seed_per_replica is not None:
            self.rates = Rates(per_replica=self.seed_per_replica)

    def update(self, now: Counters) -> Rates:
        """Take one poll's counters; return the rates known so far."""
        last, self.last = self.last, now
        if last is None:
            return self.rates
        elapsed = now.time - last.time
        if elapsed <= 0:
            return self.rates
        arrival, service = self.rates.arrival, self.rates.service
        per_replica = self.rates.per_replica
        if now.entries_added is not None and last.entries_added is not None:
            added = now.entries_added - last.entries_added
            if added < 0:  # Redis restarted empty or the stream was re-created
                return self._reset()
            arrival = _smooth(arrival, added / elapsed, elapsed, self.half_life)
        if now.completed is not None and last.completed is not None:
            done = now.completed - last.completed
            if done < 0:
                return self._reset()
            sample = done / elapsed
            service = _smooth(service, sample, elapsed, self.half_life)
            # Busy the whole interval: a backlog at both ends, the same replicas running.
            busy = last.backlog > 0 and now.backlog > 0 and now.replicas == last.replicas > 0
            if busy and sample > 0:
                old = per_replica if self.learned else None  # a real sample replaces the seed
                per_replica = _smooth(old, sample / now.replicas, elapsed, self.half_life)
                self.learned = True
        self.rates = Rates(arrival=arrival, service=service, per_replica=per_replica)
        return self.rates

    def _reset(self) -> Rates:
        self.rates = Rates(per_replica=self.rates.per_replica)
        return self.rates
