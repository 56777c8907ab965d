"""The dead-letter mover: stranded pending entries go to the dead-letter stream, gone consumers go.

An entry is stranded when it has been idle longer than `deadLetter.idleSeconds`, when it has been
delivered `maxDeliveries` times. An entry whose consumer has no pod any more follows the same
rules (unless `gone_idle_ms` says sooner): live consumers claim it after their CLAIM_IDLE_MS and
store it, so only what nobody picks up is dead-lettered. Each page of such
entries moves in one call of the consumer's atomic Lua script (`Scripts.dead_letter`), which
re-checks inside Redis that the entry is still pending and idle for at least `min_idle_ms`: an
entry a live consumer has just taken is never stolen, and a move repeated after an operator
restart is a no-op for what was already moved.

A consumer whose pod is gone and whose pending list is empty is deleted from the group with
`Scripts.leave` (check and delete in one step). A consumer with pending entries is never deleted:
`XGROUP DELCONSUMER` would silently drop them.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Collection, Iterable

from streamscale.core.constants import REASON_DELETED, REASON_IDLE, REASON_MAX_DELIVERIES
from streamscale.core.deadletter import DeadLetter, Scripts
from streamscale.core.streams import ConsumerInfo, PendingEntry, StreamId, pending_entries
from streamscale.operator import constants


@dataclasses.dataclass(frozen=True)
class Rules:
    """When a pending entry is stranded."""

    max_deliveries: int
    idle_ms: int
    """`deadLetter.idleSeconds` in milliseconds."""
    min_idle_ms: int = constants.MIN_MOVE_IDLE_MS
    """Nothing idle for less than this moves, whatever else holds."""
    gone_idle_ms: int | None = None
    """Entries of a consumer with no pod move once idle this long; None: `idle_ms`, like any
    entry. Live consumers claim such entries after their CLAIM_IDLE_MS and store them; moving
    them sooner would dead-letter messages the vanished pod stored but did not ack (in the table
    and the dead-letter stream at once), or valid ones while the database is down."""


@dataclasses.dataclass
class Reclaimed:
    """What one pass of the mover did."""

    dead_lettered: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    """Entries that reached the dead-letter stream, by `x-reason`."""
    removed: list[str] = dataclasses.field(default_factory=list)
    """Consumers deleted from the group."""
    scanned: int = 0
    complete: bool = True
    """False when the page budget ran out before the end of the pending list."""

    @property
    def total(self) -> int:
        return sum(self.dead_lettered.values())

    def add(self, other: Reclaimed) -> None:
        """Fold another stream's pass into this one."""
        self.dead_lettered.update(other.dead_lettered)
        self.removed += [name for name in other.removed if name not in self.removed]
        self.scanned += other.scanned
        self.complete = self.complete and other.complete


def owner_pod(consumer: str, pods: Collection[str]) -> str | None:
    """The pod a consumer name belongs to: the name itself, or the name minus a `-<n>` suffix."""
    if consumer in pods:
        return consumer
    base, sep, number = consumer.rpartition("-")
    if sep and number.isdigit() and base in pods:
        return base
    return None


def deletion_costs(consumers: Iterable[ConsumerInfo], pods: Collection[str]) -> dict[str, int]:
    """Each live pod's pending entries (over its consumer names): its pod-deletion-cost.

    A pod with nothing pending costs 0 and goes first; a busy one costs its pending count, so a
    scale-in stops idle pods and leaves the ones in the middle of batches running.
    """
    costs = dict.fromkeys(pods, 0)
    for info in consumers:
        pod = owner_pod(info.name, pods)
        if pod is not None:
            costs[pod] = min(costs[pod] + info.pending, 2**31 - 1)  # the annotation is an int32
    return costs


def gone_consumers(consumers: Iterable[ConsumerInfo], pods: Collection[str]) -> set[str]:
    """Consumers of the group that no pod runs any more."""
    return {info.name for info in consumers if owner_pod(info.name, pods) is None}


def verdict(entry: PendingEntry, *, gone: bool, rules: Rules) -> str | None:
    """The `x-reason` to dead-letter `entry` with, or None to leave it where it is."""
    if entry.idle_ms < rules.min_idle_ms:
        return None
    if entry.deliveries >= rules.max_deliveries:
        return REASON_MAX_DELIVERIES
    threshold = rules.idle_ms
    if gone and rules.gone_idle_ms is not None:
        threshold = min(threshold, rules.gone_idle_ms)
    if entry.idle_ms >= threshold:
        return REASON_IDLE
    return None


async def move_stranded(
    scripts: Scripts,
    stream: str,
    group: str,
    dead_letter_stream: str,
    *,
    gone: Collection[str],
    rules: Rules,
    max_pages: int,
    page_size: int = constants.PENDING_PAGE,
    counter: str | None = None,
) -> Reclaimed:
    """Scan the group's pending list (idle entries only) and move the stranded ones.

    `counter`: the hash the move script counts each move in (see `core.deadletter.counter_key`).

    The next XPENDING page is read while the current page's script runs: Redis runs them one
    after the other anyway, but the round trips and the reply parsing overlap.
    """
    result = Reclaimed()
    redis = scripts.redis

    async def fetch(start: StreamId) -> list[PendingEntry]:
        return await pending_entries(
            redis, stream, group, count=page_size, min_idle_ms=rules.min_idle_ms, start=start
        )

    page = await fetch("-")
    pages = 1
    while page:
        result.scanned += len(page)
        has_more = len(page) == page_size
        if has_more and pages >= max_pages:
            result.complete = False
            has_more = False
        by_reason: dict[str, list[DeadLetter]] = collections.defaultdict(list)
        for entry in page:
            reason = verdict(entry, gone=entry.consumer in gone, rules=rules)
            if reason is not None:
                error = f"consumer {entry.consumer} is gone" if entry.consumer in gone else ""
                by_reason[reason].append(DeadLetter(entry.id, reason, error))
        moves = [
            _move(scripts, stream, group, dead_letter_stream, reason, items, rules, result, counter)
            for reason, items in by_reason.items()
        ]
        next_page = asyncio.ensure_future(fetch("(" + page[-1].id)) if has_more else None
        await asyncio.gather(*moves)
        page = await next_page if next_page is not None else []
        pages += 1
    return result


async def _move(
    scripts: Scripts,
    stream: str,
    group: str,
    dead_letter_stream: str,
    reason: str,
    items: list[DeadLetter],
    rules: Rules,
    result: Reclaimed,
    counter: str | None,
) -> None:
    moved = await scripts.dead_letter(
        stream, dead_letter_stream, group, items, min_idle_ms=rules.min_idle_ms, counter=counter
    )
    if moved.moved:
        result.dead_lettered[reason] += moved.moved
    if moved.deleted:
        result.dead_lettered[REASON_DELETED] += moved.deleted


async def remove_gone(scripts: Scripts, stream: str, group: str, gone: Iterable[str]) -> list[str]:
    """Delete the gone consumers whose pending list is empty; return their names."""
    removed = []
    for name in sorted(gone):
        if await scripts.leave(stream, group, name) == 0:
            removed.append(name)
    return removed


async def reclaim(
    scripts: Scripts,
    stream: str,
    group: str,
    dead_letter_stream: str,
    *,
    consumers: list[ConsumerInfo],
    pods: Collection[str] | None,
    rules: Rules,
    max_pages: int = 200,
    counter: str | None = None,
) -> Reclaimed:
    """One pass: move stranded entries, then delete gone consumers with nothing pending.

    `pods` None means the pods are unknown (the API failed): then only the idle and
    max-deliveries rules apply and no consumer is deleted.
    """
    gone = gone_consumers(consumers, pods) if pods is not None else set()
    if any(info.pending for info in consumers):
        result = await move_stranded(
            scripts,
            stream,
            group,
            dead_letter_stream,
            gone=gone,
            rules=rules,
            max_pages=max_pages,
            counter=counter,
        )
    else:
        result = Reclaimed()
    if gone:
        result.removed = await remove_gone(scripts, stream, group, gone)
    return result
