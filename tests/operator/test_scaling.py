"""The scaling policy as plain functions: examples and properties (hypothesis)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscale.operator.scaling import (
    Decision,
    Policy,
    ScalingState,
    decide,
    desired_replicas,
)

policies = st.builds(
    lambda lo, span, per, act, win, frac: Policy(
        min_replicas=lo,
        max_replicas=max(1, lo + span),
        backlog_per_replica=per,
        activation_backlog=act,
        stabilization_seconds=win,
        scale_down_fraction=frac,
    ),
    lo=st.integers(0, 5),
    span=st.integers(0, 20),
    per=st.integers(1, 5000),
    act=st.integers(0, 1000),
    win=st.sampled_from([0.0, 5.0, 60.0, 300.0]),
    frac=st.sampled_from([0.1, 0.5, 1.0]),
)
backlogs = st.integers(0, 10_000_000)
currents = st.integers(0, 40)
history = st.lists(st.tuples(backlogs, currents), max_size=20)


def replay(policy: Policy, past: list[tuple[int, int]]) -> ScalingState:
    state = ScalingState()
    for t, (backlog, current) in enumerate(past):
        decide(policy, state, backlog=backlog, current=current, now=float(t))
    return state


def test_examples() -> None:
    policy = Policy(min_replicas=0, max_replicas=10, backlog_per_replica=1000)
    assert desired_replicas(policy, 0, 0) == 0
    assert desired_replicas(policy, 1, 0) == 1
    assert desired_replicas(policy, 2500, 1) == 3
    assert desired_replicas(policy, 10**9, 1) == 10
    activation = Policy(activation_backlog=100)
    assert desired_replicas(activation, 100, 0) == 0, "stays at zero up to the activation backlog"
    assert desired_replicas(activation, 101, 0) == 1
    assert desired_replicas(activation, 50, 2) == 1, "a running group keeps a replica for its tail"


def test_scale_up_at_once_and_down_after_the_window() -> None:
    policy = Policy(max_replicas=10, backlog_per_replica=100, stabilization_seconds=60)
    state = ScalingState()
    up = decide(policy, state, backlog=750, current=1, now=0)
    assert (up.target, up.direction) == (8, "up")
    for t in range(5, 61, 5):
        hold = decide(policy, state, backlog=0, current=8, now=float(t))
        assert hold.target == 8 and hold.direction is None
    replicas, t = 8, 60.0
    while replicas and t < 200:
        t += 5
        replicas = decide(policy, state, backlog=0, current=replicas, now=t).target
    assert replicas == 0
    assert t <= 60 + 5 * 4, "capped steps still reach zero in a few polls"


def test_invalid_policies() -> None:
    with pytest.raises(ValueError, match="maxReplicas"):
        Policy(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="maxReplicas"):
        Policy(min_replicas=0, max_replicas=0)
    with pytest.raises(ValueError, match="backlogPerReplica"):
        Policy(backlog_per_replica=0)


@given(policies, history, backlogs, currents)
@settings(max_examples=300, deadline=None)
def test_always_within_bounds(
    policy: Policy, past: list[tuple[int, int]], backlog: int, current: int
) -> None:
    decision = decide(policy, replay(policy, past), backlog=backlog, current=current, now=100.0)
    assert policy.min_replicas <= decision.target <= policy.max_replicas


@given(policies, history, st.integers(1, 10_000_000), st.integers(1, 40))
@settings(max_examples=300, deadline=None)
def test_never_zero_while_backlog_remains(
    policy: Policy, past: list[tuple[int, int]], backlog: int, current: int
) -> None:
    decision = decide(policy, replay(policy, past), backlog=backlog, current=current, now=100.0)
    assert decision.target >= 1


@given(policies, history, st.integers(0, 10_000_000))
@settings(max_examples=300, deadline=None)
def test_activation_from_zero(policy: Policy, past: list[tuple[int, int]], backlog: int) -> None:
    decision = decide(policy, replay(policy, past), backlog=backlog, current=0, now=100.0)
    if backlog > policy.activation_backlog:
        assert decision.target >= 1
    else:
        assert decision.target == policy.min_replicas


@given(policies, history, backlogs, backlogs, currents)
@settings(max_examples=300, deadline=None)
def test_monotone_in_backlog(
    policy: Policy, past: list[tuple[int, int]], a: int, b: int, current: int
) -> None:
    low, high = sorted((a, b))
    state = replay(policy, past)
    d_low = decide(policy, copy.deepcopy(state), backlog=low, current=current, now=100.0)
    d_high = decide(policy, copy.deepcopy(state), backlog=high, current=current, now=100.0)
    assert d_low.desired <= d_high.desired
    assert d_low.target <= d_high.target


@given(
    policies.filter(lambda p: p.stabilization_seconds >= 60),
    st.integers(0, 100_000),
    st.integers(0, 100_000),
    st.integers(2, 10),
)
@settings(max_examples=200, deadline=None)
def test_no_flapping_on_oscillating_backlog(policy: Policy, a: int, b: int, period: int) -> None:
    """A backlog alternating faster than the window: after the first rise, replicas never fall."""
    state = ScalingState()
    replicas = policy.min_replicas
    changes: list[Decision] = []
    for t in range(0, 600, 5):
        backlog = a if (t // (5 * period)) % 2 == 0 else b
        decision = decide(policy, state, backlog=backlog, current=replicas, now=float(t))
        if decision.direction is not None:
            changes.append(decision)
        replicas = decision.target
    if 5 * period * 2 <= policy.stabilization_seconds:
        assert all(d.direction == "up" for d in changes)
        assert len(changes) <= 2


def test_window_memory_stays_small() -> None:
    policy = Policy(max_replicas=1000, backlog_per_replica=1, stabilization_seconds=60)
    state = ScalingState()
    for t in range(10_000):
        decide(policy, state, backlog=10_000 - t, current=1000, now=float(t))
    assert len(state.desires) <= 61


def test_one_scale_down_step_removes_at_most_the_fraction() -> None:
    policy = Policy(max_replicas=10, backlog_per_replica=100, stabilization_seconds=0)
    assert decide(policy, ScalingState(), backlog=0, current=3, now=0).target == 2
    assert decide(policy, ScalingState(), backlog=0, current=5, now=0).target == 3
    assert decide(policy, ScalingState(), backlog=0, current=1, now=0).target == 0


@settings(max_examples=300, deadline=None)
@given(policy=policies, past=history, backlog=backlogs, current=currents)
def test_never_removes_more_than_the_fraction_within_bounds(
    policy: Policy, past: list[tuple[int, int]], backlog: int, current: int
) -> None:
    current = max(policy.min_replicas, min(policy.max_replicas, current))
    state = replay(policy, past)
    decision = decide(policy, state, backlog=backlog, current=current, now=float(len(past)))
    if decision.direction == "down":
        removed = current - decision.target
        assert removed <= max(1, int(current * policy.scale_down_fraction)), decision
