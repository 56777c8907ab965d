"""The StreamConsumer's `status`: numbers and conditions (Ready, Active, Degraded)."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from streamscale.operator import constants


def now_iso() -> str:
    """RFC 3339 UTC with second precision, the way Kubernetes writes its timestamps."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Condition:
    """One condition as this poll sees it (the transition time is filled in on merge)."""

    type: str
    status: bool
    reason: str
    message: str = ""


def merge_conditions(
    previous: Sequence[Mapping[str, Any]] | None, updates: Sequence[Condition], now: str
) -> list[dict[str, Any]]:
    """New conditions; `lastTransitionTime` moves only when a condition's status flips."""
    old = {item.get("type"): item for item in previous or ()}
    merged: list[dict[str, Any]] = []
    for update in updates:
        status = "True" if update.status else "False"
        before = old.get(update.type) or {}
        changed = before.get("status") != status
        merged.append(
            {
                "type": update.type,
                "status": status,
                "reason": update.reason,
                "message": update.message,
                "lastTransitionTime": now if changed else before.get("lastTransitionTime", now),
            }
        )
    return merged


def healthy(
    *, replicas: int, backlog: int, lag_estimated: bool, notes: Sequence[str] = ()
) -> list[Condition]:
    """Conditions after a successful poll; `notes` are things the user should know."""
    lag_note = (
        ["lag is NULL in XINFO GROUPS; the backlog uses an estimate"] if lag_estimated else []
    )
    message = "; ".join([*lag_note, *notes])
    return [
        Condition(constants.CONDITION_READY, True, "Polled", message),
        Condition(
            constants.CONDITION_ACTIVE,
            replicas > 0,
            "Consuming" if replicas > 0 else "ScaledToZero",
            f"backlog {backlog}, {replicas} replicas",
        ),
        Condition(constants.CONDITION_DEGRADED, False, "Polled"),
    ]


def degraded(reason: str, message: str, *, replicas: int | None) -> list[Condition]:
    """Conditions when the poll failed: the replicas stay as they were."""
    active = replicas is not None and replicas > 0
    return [
        Condition(constants.CONDITION_READY, False, reason, message),
        Condition(constants.CONDITION_ACTIVE, active, reason, "replicas left unchanged"),
        Condition(constants.CONDITION_DEGRADED, True, reason, message),
    ]


def condition_status(status: Mapping[str, Any] | None, kind: str) -> str | None:
    """`"True"`, `"False"` or None for one condition type of a status dict."""
    for item in (status or {}).get("conditions") or ():
        if item.get("type") == kind:
            value = item.get("status")
            return str(value) if value is not None else None
    return None
