"""A queue model to drive the scaling policy through traces, second by second.

The model: entries arrive at a trace's rate; each ready replica serves up to `capacity(t)`
entries per second, first in, first out; a replica asked for becomes ready `startup_seconds`
later (image pull, start-up, group join), one asked away is gone at once. Every
`poll_seconds` the operator's own code runs on what Redis would report: the backlog,
`entries-added`, the completed count, and the replicas (`forecasting.RateEstimator`,
`scaling.decide`).

What comes out per run: the peak backlog, the longest time any entry waited (FIFO), the
longest time from a backlog's peak to empty, replica-seconds (replicas asked for, starting
ones included: they cost as much), and the number of scale changes.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable

from streamscale.operator.forecasting import Counters, RateEstimator
from streamscale.operator.scaling import Policy, ScalingState, decide

Rate = Callable[[float], float]


@dataclasses.dataclass(frozen=True)
class Trace:
    """An arrival rate and a per-replica capacity over time (entries per second)."""

    name: str
    arrival: Rate
    capacity: Rate
    seconds: int
    burst: tuple[int, int] | None = None
    """(second, entries): a burst produced at once on top of `arrival`."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    trace: str
    mode: str
    peak_backlog: int
    max_wait_seconds: float
    drain_seconds: float
    """The longest time from a backlog's peak to the backlog being empty (inf: never within
    the run): what drainTime mode's target bounds."""
    replica_seconds: int
    scale_changes: int
    peak_replicas: int


CAPACITY = 500.0
"""Entries per second one replica gets through on these traces."""


def traces() -> list[Trace]:
    """Step, ramp, sine, burst and a sink that slows down for a while."""
    steady: Rate = lambda t: CAPACITY  # noqa: E731
    return [
        Trace("step", lambda t: 1500.0 if 60 <= t < 420 else 0.0, steady, 720),
        Trace("ramp", lambda t: max(0.0, 3000.0 * (1 - abs(t - 240) / 180)), steady, 720),
        Trace(
            "sine",
            lambda t: 1200.0 + 1000.0 * math.sin(2 * math.pi * t / 300) if t < 600 else 0.0,
            steady,
            900,
        ),
        Trace("burst", lambda t: 100.0 if t < 480 else 0.0, steady, 720, burst=(60, 60_000)),
        Trace(
            "slow-sink",
            lambda t: 1000.0 if t < 480 else 0.0,
            lambda t: CAPACITY / 2 if 150 <= t < 300 else CAPACITY,
            720,
        ),
    ]


def simulate(
    trace: Trace,
    policy: Policy,
    *,
    poll_seconds: int = 5,
    startup_seconds: int = 10,
    seed_per_replica: float | None = None,
) -> Outcome:
    """Run `trace` under `policy`, one step a second; see the module docstring."""
    estimator = RateEstimator(seed_per_replica=seed_per_replica)
    state = ScalingState()
    arrived = 0.0  # cumulative, fractional: rates are not whole numbers per second
    served = 0.0
    # FIFO wait times: the cumulative count after each second with arrivals, and that second.
    arrived_marks: list[float] = []
    arrival_times: list[float] = []
    asked = policy.min_replicas
    starting: list[int] = []  # seconds at which each asked-for replica becomes ready
    ready = policy.min_replicas
    peak_backlog = 0
    max_wait = 0.0
    replica_seconds = 0
    changes = 0
    peak_replicas = asked
    drain = 0.0
    busy_peak: tuple[int, int] | None = None  # (backlog, second) of the current busy period
    for t in range(trace.seconds):
        rate = trace.arrival(t)
        extra = trace.burst[1] if trace.burst and trace.burst[0] == t else 0
        if rate > 0 or extra:
            arrived += rate + extra
            arrived_marks.append(arrived)
            arrival_times.append(float(t))
        ready += sum(1 for s in starting if s == t)
        starting = [s for s in starting if s > t]
        served = min(arrived, served + ready * trace.capacity(t))
        # The oldest entry still waiting arrived at the first time the cumulative count passed
        # `served`: its wait so far is the longest of anything in the queue.
        index = bisect.bisect_right(arrived_marks, served)
        if index < len(arrived_marks):
            max_wait = max(max_wait, t - arrival_times[index])
        backlog = math.ceil(arrived - served - 1e-9)
        peak_backlog = max(peak_backlog, backlog)
        if backlog > 0 and (busy_peak is None or backlog >= busy_peak[0]):
            busy_peak = (backlog, t)
        elif backlog == 0 and busy_peak is not None:
            drain = max(drain, t - busy_peak[1])
            busy_peak = None
        replica_seconds += asked
        if t % poll_seconds == 0:
            rates = estimator.update(Counters(float(t), int(arrived), int(served), backlog, ready))
            decision = decide(
                policy, state, backlog=backlog, current=asked, now=float(t), rates=rates
            )
            if decision.target != asked:
                changes += 1
                if decision.target > asked:
                    starting += [t + startup_seconds] * (decision.target - asked)
                else:
                    gone = asked - decision.target
                    # Replicas still starting go first: they serve nothing yet.
                    cancelled = min(gone, len(starting))
                    starting = sorted(starting)[: len(starting) - cancelled]
                    ready -= gone - cancelled
                asked = decision.target
                peak_replicas = max(peak_replicas, asked)
    if busy_peak is not None:
        drain = math.inf
    return Outcome(
        trace=trace.name,
        mode=policy.mode,
        peak_backlog=peak_backlog,
        max_wait_seconds=max_wait,
        drain_seconds=drain,
        replica_seconds=replica_seconds,
        scale_changes=changes,
        peak_replicas=peak_replicas,
    )
