"""The scaling policy: pure functions of (backlog, current replicas, recent desires, time).

The operator and `streamscale demo` share this module. Both keep one `ScalingState` per consumer
group, call `decide()` once per poll, and apply the result through an `Actuator` (a Deployment's
`spec.replicas` in the cluster, local processes in the demo).

The rules, in order:

1. desired = clamp(wanted, min, max), where backlog = lag + pending and wanted is
   - backlog mode (the default): ceil(backlog / backlogPerReplica);
   - drainTime mode: ceil((arrival rate + backlog / targetDrainSeconds) / per-replica
     throughput), the replicas that serve what arrives and drain the backlog within the target
     (rates from `forecasting`); while a rate is unknown (first polls, a reset counter), backlog
     mode, and the decision says so.
2. From zero replicas, activate only when backlog > activationBacklog; otherwise stay at `min`.
3. While backlog > 0 and some replica is running, never drop to zero: a NULL lag that was read
   as zero, or a tiny tail, must not strand the work with nobody to do it.
4. Scale up at once. Scale down only to the highest desire seen within the stabilization window
   (so an oscillating backlog does not make replicas flap), and by a capped step.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Protocol

from streamscale.operator import constants
from streamscale.operator.forecasting import Rates


class Actuator(Protocol):
    """Where replicas live: a Deployment's `spec.replicas`, or a set of local processes."""

    async def get_replicas(self) -> int:
        """The replica count currently asked for."""
        ...

    async def set_replicas(self, n: int) -> None:
        """Ask for `n` replicas."""
        ...


@dataclasses.dataclass(frozen=True)
class Policy:
    """One StreamConsumer's `spec.scaling`, validated."""

    min_replicas: int = constants.DEFAULT_MIN_REPLICAS
    max_replicas: int = constants.DEFAULT_MAX_REPLICAS
    backlog_per_replica: int = constants.DEFAULT_BACKLOG_PER_REPLICA
    activation_backlog: int = constants.DEFAULT_ACTIVATION_BACKLOG
    stabilization_seconds: float = constants.DEFAULT_STABILIZATION_SECONDS
    scale_down_fraction: float = constants.DEFAULT_SCALE_DOWN_FRACTION
    """One scale-down step removes at most this share of the replicas, rounded down (min. one)."""
    mode: str = constants.MODE_BACKLOG
    target_drain_seconds: float | None = None
    """drainTime mode: drain the backlog within this many seconds."""

    def __post_init__(self) -> None:
        if self.mode not in constants.MODES:
            raise ValueError(f"mode must be one of {', '.join(constants.MODES)}, got {self.mode!r}")
        if self.mode == constants.MODE_DRAIN_TIME and not (self.target_drain_seconds or 0) > 0:
            raise ValueError("mode drainTime needs targetDrainSeconds > 0")
        if self.min_replicas < 0:
            raise ValueError(f"minReplicas must be >= 0, got {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"maxReplicas must be >= 1 and >= minReplicas ({self.min_replicas}),"
                f" got {self.max_replicas}"
            )
        if self.backlog_per_replica < 1:
            raise ValueError(f"backlogPerReplica must be >= 1, got {self.backlog_per_replica}")
        if self.activation_backlog < 0:
            raise ValueError(f"activationBacklog must be >= 0, got {self.activation_backlog}")
        if self.stabilization_seconds < 0:
            raise ValueError("scaleDownStabilizationSeconds must be >= 0")
        if not 0 < self.scale_down_fraction <= 1:
            raise ValueError("the scale-down fraction must be in (0, 1]")


@dataclasses.dataclass
class ScalingState:
    """What the policy remembers between polls: the recent desires and the last scale time.

    `desires` is a sliding-window maximum: (time, desire) pairs with strictly decreasing desires,
    so its first element is the highest desire of the window and it never holds more pairs than
    polls within one window.
    """

    desires: collections.deque[tuple[float, int]] = dataclasses.field(
        default_factory=collections.deque
    )
    last_scale_time: float | None = None

    def remember(self, now: float, desire: int, window: float) -> int:
        """Record `desire` at `now`; return the highest desire within the last `window` seconds."""
        while self.desires and self.desires[-1][1] <= desire:
            self.desires.pop()
        self.desires.append((now, desire))
        while self.desires[0][0] < now - window:
            self.desires.popleft()
        return self.desires[0][1]


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of one poll."""

    desired: int
    """What the backlog asks for right now (rules 1-3), before stabilization."""
    target: int
    """What to set the replicas to (equal to `current` when nothing changes)."""
    current: int
    reason: str
    basis: str = constants.MODE_BACKLOG
    """What `desired` was computed from: `backlog`, or `drainTime` when the rates were known."""

    @property
    def direction(self) -> str | None:
        """`up`, `down`, or None when the replicas stay."""
        if self.target > self.current:
            return constants.DIRECTION_UP
        if self.target < self.current:
            return constants.DIRECTION_DOWN
        return None


def wanted_replicas(policy: Policy, backlog: int, rates: Rates | None = None) -> tuple[int, str]:
    """Rule 1 before clamping: the replicas wanted, and the mode they were computed in."""
    if policy.mode == constants.MODE_DRAIN_TIME and rates is not None:
        arrival, per_replica = rates.arrival, rates.per_replica
        if arrival is not None and per_replica is not None and per_replica > 0:
            assert policy.target_drain_seconds is not None  # checked by Policy
            need = arrival + backlog / policy.target_drain_seconds
            return math.ceil(need / per_replica), constants.MODE_DRAIN_TIME
    return math.ceil(backlog / policy.backlog_per_replica), constants.MODE_BACKLOG


def desired_replicas(policy: Policy, backlog: int, current: int, rates: Rates | None = None) -> int:
    """Rules 1-3: the replica count this backlog asks for, given the replicas running now."""
    return _desired(policy, backlog, current, rates)[0]


def _desired(policy: Policy, backlog: int, current: int, rates: Rates | None) -> tuple[int, str]:
    if backlog < 0:
        raise ValueError(f"backlog must be >= 0, got {backlog}")
    wanted, basis = wanted_replicas(policy, backlog, rates)
    if current <= 0 and backlog <= policy.activation_backlog:
        return policy.min_replicas, basis
    floor = policy.min_replicas
    if backlog > 0:
        floor = max(floor, 1)
    return max(floor, min(policy.max_replicas, wanted)), basis


def scale_down_step(policy: Policy, current: int) -> int:
    """The most replicas one scale-down may remove: the fraction rounded down, at least one.

    Rounded down, so "at most half" holds for odd counts too (3 -> 2, never 3 -> 1).
    """
    return max(1, math.floor(current * policy.scale_down_fraction))


def decide(
    policy: Policy,
    state: ScalingState,
    *,
    backlog: int,
    current: int,
    now: float,
    rates: Rates | None = None,
) -> Decision:
    """One poll's decision (rule 4 on top of `desired_replicas`); updates `state`.

    `now` is a monotonic time in seconds. The caller applies `target` when it differs from
    `current` and then sets `state.last_scale_time`.
    """
    desired, basis = _desired(policy, backlog, current, rates)
    asks = f"backlog {backlog} asks for"
    if basis == constants.MODE_DRAIN_TIME:
        assert rates is not None and rates.arrival is not None
        asks = (
            f"backlog {backlog} at {rates.arrival:.4g}/s arriving, to drain within"
            f" {policy.target_drain_seconds:g}s, asks for"
        )
    elif policy.mode == constants.MODE_DRAIN_TIME:
        asks = f"rates not known yet, backlog mode: backlog {backlog} asks for"
    stabilized = state.remember(now, desired, policy.stabilization_seconds)
    if desired >= current:
        target = min(desired, policy.max_replicas)
        reason = f"{asks} {desired} replicas"
    elif stabilized >= current:
        target = current
        reason = (
            f"{asks} {desired} replicas; holding {current} within the"
            f" {policy.stabilization_seconds:g}s stabilization window"
        )
    else:
        target = max(stabilized, current - scale_down_step(policy, current))
        reason = (
            f"{asks} {desired} replicas, and at most {stabilized} for"
            f" {policy.stabilization_seconds:g}s"
        )
    # Out-of-bounds replicas (set by hand, or the policy changed) are pulled back within bounds,
    # except that a running group with a backlog never drops to zero (rule 3).
    target = max(policy.min_replicas, min(policy.max_replicas, target))
    if backlog > 0 and current > 0:
        target = max(target, 1)
    return Decision(desired=desired, target=target, current=current, reason=reason, basis=basis)


async def step(
    actuator: Actuator,
    policy: Policy,
    state: ScalingState,
    *,
    backlog: int,
    now: float,
    rates: Rates | None = None,
) -> Decision:
    """Read the replicas, decide, and apply the decision when it changes anything."""
    current = await actuator.get_replicas()
    decision = decide(policy, state, backlog=backlog, current=current, now=now, rates=rates)
    if decision.direction is not None:
        await actuator.set_replicas(decision.target)
        state.last_scale_time = now
    return decision
