"""`streamscale status`: XLEN, XINFO GROUPS, XINFO CONSUMERS and dead-letter lengths, as one table.

Lag comes from `XINFO GROUPS`. Redis reports it as NULL after XDEL/XTRIM or for a group created
at an arbitrary ID; then the unread entries are counted with a bounded XRANGE instead and the
value is marked (`*` in the table, `"lag_source": "estimate"` in JSON; `>=` when the count hit
its bound). Throughput is the growth of the group's `entries-read` between two snapshots.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

import streamscale.core.streams
from streamscale.core import lag
from streamscale.core.constants import DEAD_LETTER_SUFFIX
from streamscale.core.shards import logical_stream

DISCOVER_LIMIT = 50
"""At most this many streams are discovered with SCAN when none are named."""


@dataclasses.dataclass
class ConsumerRow:
    name: str
    pending: int
    idle_ms: int
    inactive_ms: int | None


@dataclasses.dataclass
class GroupRow:
    name: str
    lag: int | None
    lag_source: str
    """`xinfo` (reported by Redis), `estimate` (counted because XINFO said NULL), or `none`."""
    lag_exact: bool
    pending: int
    entries_read: int | None
    last_delivered_id: str
    consumers: list[ConsumerRow]
    throughput: float | None = None
    """Entries read per second since the previous snapshot (None on the first one)."""


@dataclasses.dataclass
class StreamRow:
    stream: str
    length: int
    dead_letter_stream: str
    dead_letter_length: int
    groups: list[GroupRow]


@dataclasses.dataclass
class GroupTotal:
    """One group summed over the shards of a logical stream."""

    name: str
    lag: int | None
    """None when any shard's lag is unknown."""
    lag_exact: bool
    pending: int
    throughput: float | None


@dataclasses.dataclass
class LogicalRow:
    """A sharded stream (`{orders:0}` .. `{orders:N-1}`) as one: its shards' sums."""

    stream: str
    shards: int
    length: int
    dead_letter_length: int
    groups: list[GroupTotal]


@dataclasses.dataclass
class Snapshot:
    at: float
    streams: list[StreamRow]

    @property
    def logical(self) -> list[LogicalRow]:
        """The sharded streams among `streams`, each summed over the shards present."""
        by_name: dict[str, list[StreamRow]] = {}
        for row in self.streams:
            parsed = logical_stream(row.stream)
            if parsed is not None:
                by_name.setdefault(parsed[0], []).append(row)
        return [_logical(name, rows) for name, rows in sorted(by_name.items())]

    def as_dict(self) -> dict[str, Any]:
        return {
            "streams": [dataclasses.asdict(row) for row in self.streams],
            "logical_streams": [dataclasses.asdict(row) for row in self.logical],
        }


def _logical(name: str, rows: list[StreamRow]) -> LogicalRow:
    groups: dict[str, list[GroupRow]] = {}
    for row in rows:
        for group in row.groups:
            groups.setdefault(group.name, []).append(group)
    totals = []
    for group_name, parts in groups.items():
        lags = [g.lag for g in parts]
        rates = [g.throughput for g in parts]
        totals.append(
            GroupTotal(
                group_name,
                None if None in lags else sum(lag or 0 for lag in lags),
                all(g.lag_exact for g in parts),
                sum(g.pending for g in parts),
                None if None in rates else sum(rate or 0.0 for rate in rates),
            )
        )
    return LogicalRow(
        name,
        len(rows),
        sum(row.length for row in rows),
        sum(row.dead_letter_length for row in rows),
        totals,
    )


def _order(name: str) -> tuple[str, int, str]:
    """Shards of one logical stream together, by index; other streams by name."""
    parsed = logical_stream(name)
    return (parsed[0], parsed[1], name) if parsed else (name, -1, name)


async def discover(
    redis: streamscale.core.streams.Client, limit: int = DISCOVER_LIMIT
) -> list[str]:
    """Stream keys in this database, without dead-letter streams, sorted, at most `limit`."""
    found: set[str] = set()
    async for key in redis.scan_iter(_type="STREAM", count=1000):
        name = streamscale.core.streams.as_str(key)
        if not name.endswith(DEAD_LETTER_SUFFIX):
            found.add(name)
        if len(found) >= limit:
            break
    return sorted(found, key=_order)


async def _group_row(
    redis: streamscale.core.streams.Client, stream: str, info: streamscale.core.streams.GroupInfo
) -> GroupRow:
    group_lag = await lag.group_lag(redis, stream, info)
    consumers = [
        ConsumerRow(c.name, c.pending, c.idle_ms, c.inactive_ms)
        for c in await streamscale.core.streams.consumer_infos(redis, stream, info.name)
    ]
    entries_read = info.entries_read
    if entries_read is None and info.last_delivered_id == "0-0":
        entries_read = 0  # a group made at "0" that has read nothing yet: Redis says NULL
    return GroupRow(
        info.name,
        group_lag.count,
        group_lag.source,
        group_lag.exact,
        info.pending,
        entries_read,
        info.last_delivered_id,
        consumers,
    )


async def collect(
    redis: streamscale.core.streams.Client,
    streams: Sequence[str],
    previous: Snapshot | None = None,
    dead_letter_streams: dict[str, str] | None = None,
) -> Snapshot:
    """One snapshot of `streams`; throughput is computed against `previous` when given."""
    now = time.monotonic()
    rows = []
    for stream in streams:
        dlq = (dead_letter_streams or {}).get(stream, stream + DEAD_LETTER_SUFFIX)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xlen(dlq)
            length, dlq_length = await pipe.execute()
        groups = [
            await _group_row(redis, stream, g)
            for g in await streamscale.core.streams.group_infos(redis, stream)
        ]
        rows.append(StreamRow(stream, int(length), dlq, int(dlq_length), groups))
    snapshot = Snapshot(now, rows)
    if previous is not None:
        _throughput(previous, snapshot)
    return snapshot


def _throughput(previous: Snapshot, current: Snapshot) -> None:
    elapsed = current.at - previous.at
    if elapsed <= 0:
        return
    before = {(row.stream, g.name): g.entries_read for row in previous.streams for g in row.groups}
    for row in current.streams:
        for group in row.groups:
            old = before.get((row.stream, group.name))
            if old is not None and group.entries_read is not None:
                group.throughput = max(0, group.entries_read - old) / elapsed


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f}s"
    return f"{ms / 60_000:.0f}m"


def lag_text(group: GroupRow) -> str:
    """Lag as shown: plain from XINFO, `*` when counted, `>=` when the count hit its bound."""
    if group.lag is None:
        return "?"
    if group.lag_source == "estimate":
        return f"{'>=' if not group.lag_exact else ''}{group.lag}*"
    return str(group.lag)


def table(snapshot: Snapshot, title: str | None = "streamscale status") -> Table:
    """The snapshot as one rich table: a row per (stream, group)."""
    grid = Table(title=title, title_justify="left", expand=False)
    for name, justify in [
        ("stream", "left"),
        ("length", "right"),
        ("group", "left"),
        ("lag", "right"),
        ("pending", "right"),
        ("read/s", "right"),
        ("consumers (idle, pending)", "left"),
        ("dead letters", "right"),
    ]:
        wrap = name.startswith("consumers")
        grid.add_column(name, justify=justify, no_wrap=not wrap)  # type: ignore[arg-type]
    estimated = False
    for row in snapshot.streams:
        groups: list[GroupRow | None] = [*row.groups] or [None]
        for i, group in enumerate(groups):
            first = i == 0
            stream_cells = [row.stream, str(row.length)] if first else ["", ""]
            dlq_cell = Text(
                str(row.dead_letter_length), style="red" if row.dead_letter_length else ""
            )
            if group is None:
                grid.add_row(*stream_cells, "-", "-", "-", "-", "-", dlq_cell)
                continue
            estimated |= group.lag_source == "estimate"
            consumers = (
                "\n".join(
                    f"{c.name} ({_duration(c.idle_ms)}, {c.pending})" for c in group.consumers
                )
                or "-"
            )
            rate = "-" if group.throughput is None else f"{group.throughput:.0f}"
            grid.add_row(
                *stream_cells,
                group.name,
                lag_text(group),
                str(group.pending),
                rate,
                consumers,
                dlq_cell if first else Text(""),
            )
    for total in snapshot.logical:
        for i, group_total in enumerate(total.groups or [None]):
            first = i == 0
            cells = [f"{total.stream} ({total.shards} shards)", str(total.length)]
            if group_total is None:
                grid.add_row(*cells, "-", "-", "-", "-", "-", str(total.dead_letter_length),
                             style="bold")  # fmt: skip
                continue
            lag_cell = "?" if group_total.lag is None else str(group_total.lag)
            rate = "-" if group_total.throughput is None else f"{group_total.throughput:.0f}"
            grid.add_row(
                *(cells if first else ["", ""]), group_total.name, lag_cell,
                str(group_total.pending), rate, "", str(total.dead_letter_length) if first else "",
                style="bold",
            )  # fmt: skip
    if estimated:
        grid.caption = "* lag is NULL in XINFO GROUPS (after XDEL/XTRIM): counted with XRANGE"
    return grid
