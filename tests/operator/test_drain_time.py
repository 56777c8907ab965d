"""drainTime scaling: the rate estimator, and the policy driven through a queue model's traces."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscale.operator.forecasting import Counters, RateEstimator, Rates
from streamscale.operator.scaling import Policy, ScalingState, decide
from tests.support.queue_model import CAPACITY, Trace, simulate, traces

TARGET = 30.0


def drain_policy(**extra: object) -> Policy:
    return Policy(
        max_replicas=20,
        mode="drainTime",
        target_drain_seconds=TARGET,
        **extra,  # type: ignore[arg-type]
    )


def test_rates_follow_the_counters_and_learn_only_from_busy_replicas() -> None:
    estimator = RateEstimator()
    assert estimator.update(Counters(0, 0, 0, backlog=0, replicas=2)) == Rates()
    # Idle replicas (no backlog): arrivals and service are known, capacity is not.
    rates = estimator.update(Counters(10, 1000, 1000, backlog=0, replicas=2))
    assert rates.arrival == 100 and rates.service == 100 and rates.per_replica is None
    # Busy at both ends with the same replicas: 2 replicas completed 3000 in 10 s.
    estimator.update(Counters(20, 5000, 4000, backlog=1000, replicas=2))
    rates = estimator.update(Counters(30, 9000, 7000, backlog=2000, replicas=2))
    assert rates.per_replica == pytest.approx(150)
    # A counter that goes backwards (Redis restarted empty): rates unknown, capacity kept.
    rates = estimator.update(Counters(40, 10, 10, backlog=0, replicas=2))
    assert rates.arrival is None and rates.service is None
    assert rates.per_replica == pytest.approx(150)


def test_a_seed_is_replaced_by_the_first_measured_throughput() -> None:
    estimator = RateEstimator(seed_per_replica=1000)
    estimator.update(Counters(0, 0, 0, backlog=500, replicas=1))
    rates = estimator.update(Counters(10, 3000, 2000, backlog=1500, replicas=1))
    assert rates.per_replica == pytest.approx(200)


def test_unknown_rates_fall_back_to_backlog_mode_and_say_so() -> None:
    policy = drain_policy(backlog_per_replica=100)
    decision = decide(policy, ScalingState(), backlog=450, current=1, now=0, rates=Rates())
    assert decision.desired == 5 and decision.basis == "backlog"
    assert "rates not known yet" in decision.reason
    rates = Rates(arrival=1000, per_replica=500)
    decision = decide(policy, ScalingState(), backlog=30_000, current=1, now=0, rates=rates)
    # (1000/s + 30000 / 30 s) / 500 per replica = 4
    assert decision.desired == 4 and decision.basis == "drainTime"


def test_drain_time_mode_needs_a_target() -> None:
    with pytest.raises(ValueError, match="targetDrainSeconds"):
        Policy(mode="drainTime")
    with pytest.raises(ValueError, match="mode"):
        Policy(mode="fastest")


@pytest.mark.parametrize("trace", traces(), ids=lambda t: t.name)
def test_drain_time_mode_drains_near_its_target_with_fewer_replicas_and_changes(
    trace: Trace,
) -> None:
    """Side by side with backlog mode (its defaults) on the same trace and reaction delays."""
    backlog = simulate(trace, Policy(max_replicas=20))
    drain = simulate(trace, drain_policy(), seed_per_replica=CAPACITY)
    # Polls every 5 s, replicas ready 10 s after they are asked for, rates smoothed over 10 s:
    # the target holds within a factor of two on every trace (see bench/scaling_sim.py).
    assert drain.drain_seconds <= 2 * TARGET, drain
    assert drain.replica_seconds < backlog.replica_seconds, (drain, backlog)
    assert drain.scale_changes < backlog.scale_changes, (drain, backlog)


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(min_value=50, max_value=8000),
    capacity=st.floats(min_value=100, max_value=2000),
)
def test_a_steady_load_settles_and_then_never_flaps(rate: float, capacity: float) -> None:
    """Under a constant arrival rate the replicas settle within minutes and stay put."""
    steady = Trace("steady", lambda t: rate, lambda t: capacity, 900)
    settled = simulate(steady, drain_policy(), seed_per_replica=capacity)
    longer = simulate(
        Trace("steady", lambda t: rate, lambda t: capacity, 1800), drain_policy(),
        seed_per_replica=capacity,
    )  # fmt: skip
    # Nothing changes between minute 15 and minute 30, and the replicas serve the load.
    assert longer.scale_changes == settled.scale_changes
    assert longer.peak_replicas >= min(20, math.ceil(rate / capacity))
