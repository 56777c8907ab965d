"""Helpers for the chaos, fault and load tests: a fleet of consumers, a mover, the invariant.

The invariant is the one Jepsen's total-queue checker uses, adapted to a queue with a
dead-letter side: every produced entry ID is in exactly one of {table, dead-letter stream}.

Run as `python -m tests.support.chaos mover ...` this module is also the dead-letter mover
process the chaos tests SIGKILL and restart: it loops over the operator's plain-function mover
(`streamscale.operator.reclaiming.reclaim`) when that module is installed, else over the
consumer's atomic script (`Scripts.dead_letter`) that the mover itself calls.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from tests.support.consumers import ROOT, ConsumerProcess, product, wait_until
from tests.support.servers import PostgresServer, RedisServer

POISON_KINDS = ("not-json", "wrong-type", "nul-byte")
"""Poison that fails in the decoder, in model validation, and only in PostgreSQL."""


def poison(n: int) -> bytes | dict[str, Any]:
    """A message that can never be stored; the kind rotates with `n`."""
    kind = POISON_KINDS[n % len(POISON_KINDS)]
    if kind == "not-json":
        return b"{poison " + str(n).encode()
    good = product(n)
    if kind == "wrong-type":
        return {**good, "price": "not a number"}
    return {**good, "name": f"nul\x00byte {n}"}  # PostgreSQL text cannot hold U+0000


def payloads(total: int, poison_every: int) -> Iterable[tuple[bool, bytes | dict[str, Any]]]:
    """(is_poison, payload) for message 0..total-1; every `poison_every`-th one is poison."""
    for n in range(total):
        if poison_every and n % poison_every == poison_every - 1:
            yield True, poison(n // poison_every)
        else:
            yield False, product(n)


class Producer(threading.Thread):
    """Produces `total` messages in pipelined chunks; holds `lock` per chunk.

    The chaos controller takes the same lock around a Redis restart, so the producer never
    sends a chunk into a restart and never has to guess which XADDs of a failed chunk landed.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        total: int,
        poison_every: int,
        lock: threading.Lock,
        chunk: int = 1000,
        rate: float | None = None,
    ) -> None:
        super().__init__(daemon=True, name="producer")
        self.url, self.stream, self.total = url, stream, total
        self.poison_every, self.lock, self.chunk, self.rate = poison_every, lock, chunk, rate
        self.ids: list[str] = []
        self.poison: set[str] = set()
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        import orjson  # noqa: PLC0415

        client = redis.Redis.from_url(self.url)
        started = time.monotonic()
        try:
            batch: list[tuple[bool, bytes]] = []
            for is_poison, payload in payloads(self.total, self.poison_every):
                data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                batch.append((is_poison, data))
                if len(batch) >= self.chunk:
                    self._send(client, batch)
                    batch = []
                    if self.rate:
                        ahead = len(self.ids) / self.rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
            if batch:
                self._send(client, batch)
        except BaseException as exc:
            self.error = exc
        finally:
            client.close()
            self.done.set()

    def _send(self, client: redis.Redis, batch: list[tuple[bool, bytes]]) -> None:
        for attempt in range(200):
            with self.lock:
                try:
                    pipe = client.pipeline(transaction=False)
                    for _, data in batch:
                        pipe.xadd(self.stream, {"data": data})
                    ids = [i.decode() for i in pipe.execute()]
                    break
                except redis.ConnectionError:
                    # Only before anything was sent can this happen (the lock keeps restarts
                    # out): a broken pooled connection found at the first command.
                    if attempt == 199:
                        raise
            time.sleep(0.05)
        self.ids += ids
        self.poison.update(i for i, (bad, _) in zip(ids, batch, strict=True) if bad)


class Fleet:
    """Consumer processes with stable names (a pod whose container restarts keeps its name)."""

    def __init__(self, count: int, log: Callable[[str], None], **settings: Any) -> None:
        self.settings = settings
        self.log = log
        self.names = [f"pod-{i}" for i in range(count)]
        self.procs: dict[str, ConsumerProcess] = {}
        self.kills = 0
        self.restarts = 0
        self.stopped: str | None = None

    def start(self, name: str, wait_ready: bool = True) -> None:
        self.procs[name] = ConsumerProcess(consumer=name, **self.settings).start(wait_ready)

    def start_all(self) -> None:
        for name in self.names:
            self.start(name, wait_ready=False)
        for name in self.names:
            wait_until(self.procs[name].ready, 60, what=f"{name} ready")

    def kill_random(self, rng: random.Random) -> str:
        """SIGKILL a running (not stopped) consumer and start it again under the same name."""
        name = rng.choice([n for n in self.names if n != self.stopped])
        self.procs[name].kill()
        self.kills += 1
        self.log(f"SIGKILL {name}")
        self.start(name, wait_ready=False)
        self.restarts += 1
        return name

    def sigstop(self, name: str) -> None:
        proc = self.procs[name].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)
        self.stopped = name
        self.log(f"SIGSTOP {name}")

    def sigcont(self) -> None:
        if self.stopped is not None:
            proc = self.procs[self.stopped].proc
            assert proc is not None
            proc.send_signal(signal.SIGCONT)
            self.log(f"SIGCONT {self.stopped}")
            self.stopped = None

    def check_alive(self) -> None:
        """A consumer that exited on its own (not killed by us) is a failure."""
        for name, proc in self.procs.items():
            assert proc.proc is not None
            code = proc.proc.poll()
            if code is not None:
                raise AssertionError(f"{name} exited with {code}:\n{proc.output()[-4000:]}")

    def terminate_all(self) -> dict[str, int]:
        """SIGTERM every consumer once it is up (a process still importing dies of SIGTERM)."""
        self.sigcont()
        for name, proc in self.procs.items():
            wait_until(proc.ready, 60, what=f"{name} ready before SIGTERM")
        codes = {}
        for proc in self.procs.values():
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = -9
        return codes

    def kill_all(self) -> None:
        self.sigcont()
        for proc in self.procs.values():
            proc.kill()

    def output(self) -> str:
        return "\n".join(p.output() for p in self.procs.values())


class MoverProcess:
    """`python -m tests.support.chaos mover ...`: the dead-letter mover as a killable process."""

    def __init__(self, redis_url: str, stream: str, group: str, *args: str) -> None:
        self.args = [
            sys.executable,
            "-m",
            "tests.support.chaos",
            "mover",
            redis_url,
            stream,
            group,
            *args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = ROOT / ".build" / "test-logs" / f"mover-{uuid.uuid4().hex}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.kills = 0

    def start(self) -> MoverProcess:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            self.kills += 1

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# The invariant -------------------------------------------------------------------------------


def table_ids(pg: PostgresServer, database_url: str, table: str) -> list[str]:
    """Every stream_id in `table`, duplicates included (one psql call, fine up to millions)."""
    db = database_url.rsplit("/", 1)[1]
    out = pg.psql(f"SELECT stream_id FROM {table}", database=db)
    return out.split("\n") if out else []


def dead_letters(client: redis.Redis, dlq: str, chunk: int = 10_000) -> list[dict[str, str]]:
    """Every entry of the dead-letter stream, fields decoded, in order."""
    out: list[dict[str, str]] = []
    start = "-"
    while True:
        raw = client.xrange(dlq, min=start, max="+", count=chunk)
        for entry_id, fields in raw:
            doc = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
            doc["_id"] = entry_id.decode()
            out.append(doc)
        if len(raw) < chunk:
            return out
        start = "(" + raw[-1][0].decode()


@dataclasses.dataclass
class Verdict:
    """The counts of the total-queue check; `ok` when nothing is lost, doubled or unexpected."""

    produced: int
    poison: int
    stored: int
    dead_lettered: int
    lost: int
    in_both: int
    duplicated_rows: int
    duplicated_dead_letters: int
    unexpected: int
    poison_stored: int
    poison_not_invalid: int
    good_dead_lettered: int
    stranded: int
    """Entries a consumer with no pod took and never acked: the mover's work."""
    stranded_moved: int
    """Of those, dead-lettered by the mover (reason `idle`); the rest a consumer claimed."""
    stranded_wrong_reason: int
    reasons: dict[str, int]
    lost_sample: list[str]

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.in_both or self.duplicated_rows or self.duplicated_dead_letters
            or self.unexpected or self.poison_stored or self.poison_not_invalid
            or self.stranded_wrong_reason
        )  # fmt: skip

    def table(self, title: str) -> str:
        rows = [
            ("produced", self.produced),
            ("  of which poison", self.poison),
            ("stored (rows)", self.stored),
            ("dead-lettered", self.dead_lettered),
            *((f"  reason {r}", n) for r, n in sorted(self.reasons.items())),
            ("lost (in neither)", self.lost),
            ("in both table and DLQ", self.in_both),
            ("duplicated rows", self.duplicated_rows),
            ("duplicated dead letters", self.duplicated_dead_letters),
            ("unexpected (never produced)", self.unexpected),
            ("poison stored", self.poison_stored),
            ("poison not reason=invalid", self.poison_not_invalid),
            ("good messages dead-lettered", self.good_dead_lettered),
            ("stranded on a gone consumer", self.stranded),
            ("  moved by the mover (idle)", self.stranded_moved),
            ("  claimed by a consumer", self.stranded - self.stranded_moved),
            ("  dead-lettered otherwise", self.stranded_wrong_reason),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [title, "-" * (width + 12)]
        lines += [f"{name:<{width}} {value:>11,}" for name, value in rows]
        lines.append(f"{'invariant':<{width}} {'HOLDS' if self.ok else 'BROKEN':>11}")
        return "\n".join(lines)


def check_invariant(
    produced: Sequence[str], poison: set[str], rows: Sequence[str],
    letters: Sequence[dict[str, str]], stranded: set[str] | None = None,
) -> Verdict:  # fmt: skip
    """Jepsen's total-queue accounting over {table, dead-letter stream}.

    `stranded` entries sat on a consumer whose pod is gone: the mover may dead-letter them
    (reason `idle`) before a live consumer claims them; either outcome is right, once.
    """
    stranded = stranded or set()
    produced_set = set(produced)
    row_counts = collections.Counter(rows)
    letter_counts = collections.Counter(d.get("x-original-id", "") for d in letters)
    stored, dead = set(row_counts), set(letter_counts)
    lost = produced_set - stored - dead
    reasons = collections.Counter(d.get("x-reason", "") for d in letters)
    moved = {d.get("x-original-id", "") for d in letters if d.get("x-reason") == "idle"}
    stranded_moved = stranded & moved
    wrong = {
        d.get("x-original-id", "") for d in letters
        if d.get("x-original-id") in stranded
        and d.get("x-reason") not in ("idle", "invalid")
    }  # fmt: skip
    poison_not_invalid = sum(
        1 for d in letters
        if d.get("x-original-id") in poison - stranded_moved and d.get("x-reason") != "invalid"
    ) + len(poison - dead)  # fmt: skip
    return Verdict(
        produced=len(produced),
        poison=len(poison),
        stored=len(stored),
        dead_lettered=len(dead),
        lost=len(lost),
        in_both=len(stored & dead),
        duplicated_rows=sum(n - 1 for n in row_counts.values() if n > 1),
        duplicated_dead_letters=sum(n - 1 for n in letter_counts.values() if n > 1),
        unexpected=len((stored | dead) - produced_set) + (len(produced) - len(produced_set)),
        poison_stored=len(poison & stored),
        poison_not_invalid=poison_not_invalid,
        good_dead_lettered=len(dead - poison - stranded_moved),
        stranded=len(stranded),
        stranded_moved=len(stranded_moved),
        stranded_wrong_reason=len(wrong),
        reasons=dict(reasons),
        lost_sample=sorted(lost)[:10],
    )


def group_state(client: redis.Redis, stream: str, group: str) -> dict[str, Any]:
    """XINFO GROUPS for `group` with str keys; {} while the group is missing."""
    try:
        groups = client.xinfo_groups(stream)
    except (redis.ResponseError, redis.ConnectionError):
        return {}
    for info in groups:
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return dict(info)
    return {}


def drained(client: redis.Redis, stream: str, group: str, total: int) -> bool:
    """All `total` entries were delivered to the group and nothing is pending.

    Neither `entries-read` nor `lag` can say so after an AOF reload: redis-server 7.0 reports
    them as NULL, and can later settle on a wrong count (lag 59,500 with every entry delivered,
    seen in the full chaos run). The group's last-delivered-id being the stream's last entry
    can.
    """
    info = group_state(client, stream, group)
    if not info or info.get("pending") != 0 or client.xlen(stream) != total:
        return False
    last = client.xrevrange(stream, count=1)
    return bool(last) and last[0][0] == info.get("last-delivered-id")


# The mover process ---------------------------------------------------------------------------


def _owned(consumer: str, pods: set[str]) -> bool:
    base, sep, number = consumer.rpartition("-")
    return consumer in pods or bool(sep and number.isdigit() and base in pods)


async def _mover(args: argparse.Namespace) -> None:
    from streamscale.core import constants as cc  # noqa: PLC0415
    from streamscale.core.deadletter import DeadLetter, Scripts  # noqa: PLC0415
    from streamscale.core.streams import (  # noqa: PLC0415
        connect,
        consumer_infos,
        pending_entries,
    )

    client = connect(args.redis_url)
    scripts = Scripts(client)
    dlq = args.stream + cc.DEAD_LETTER_SUFFIX
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        from streamscale.operator.reclaiming import Rules, reclaim  # noqa: PLC0415
    except ImportError:
        reclaim = None  # type: ignore[assignment]
    totals: collections.Counter[str] = collections.Counter()
    print(f"mover: using {'operator reclaim()' if reclaim else 'Scripts.dead_letter'}", flush=True)
    while not stop.is_set():
        try:
            if args.once_chunked:
                # One long move in pages, like a mover working through a big backlog: each
                # pass moves one page and pauses, so a SIGKILL lands in the middle of it.
                if reclaim is not None:
                    from streamscale.operator.reclaiming import (  # noqa: PLC0415
                        move_stranded,
                    )

                    result = await move_stranded(
                        scripts, args.stream, args.group, dlq, gone=set(args.gone.split(",")),
                        rules=Rules(max_deliveries=args.max_deliveries, idle_ms=args.idle_ms,
                                    min_idle_ms=args.min_idle_ms,
                                    gone_idle_ms=args.min_idle_ms),
                        max_pages=1, page_size=args.chunk,
                    )  # fmt: skip
                    totals.update(result.dead_lettered)
                    if result.scanned == 0:
                        break
                else:
                    page = await pending_entries(
                        client, args.stream, args.group, count=args.chunk,
                        min_idle_ms=args.min_idle_ms,
                    )  # fmt: skip
                    if not page:
                        break
                    moved = await scripts.dead_letter(
                        args.stream, dlq, args.group,
                        [DeadLetter(e.id, cc.REASON_IDLE, f"consumer {e.consumer} is gone")
                         for e in page],
                        min_idle_ms=args.min_idle_ms,
                    )  # fmt: skip
                    totals[cc.REASON_IDLE] += moved.dead_lettered
                print(f"mover: {dict(totals)}", flush=True)
                await asyncio.sleep(args.pause)
                continue
            pods = set(args.pods.split(",")) if args.pods else set()
            if reclaim is not None:
                consumers = await consumer_infos(client, args.stream, args.group)
                # The ghost's entries move once idle min_idle_ms: before the live consumers'
                # claim idle time, so the mover has work (the operator waits longer by default).
                rules = Rules(
                    max_deliveries=args.max_deliveries, idle_ms=args.idle_ms,
                    min_idle_ms=args.min_idle_ms, gone_idle_ms=args.min_idle_ms,
                )  # fmt: skip
                result = await reclaim(
                    scripts, args.stream, args.group, dlq,
                    consumers=consumers, pods=pods, rules=rules,
                )  # fmt: skip
                totals.update(result.dead_lettered)
                if result.total or result.removed:
                    print(f"mover: moved {dict(result.dead_lettered)} removed {result.removed}",
                          flush=True)  # fmt: skip
            else:
                page = await pending_entries(
                    client, args.stream, args.group, count=1000, min_idle_ms=args.min_idle_ms
                )
                items = [
                    DeadLetter(e.id, cc.REASON_MAX_DELIVERIES if e.deliveries
                               >= args.max_deliveries else cc.REASON_IDLE)
                    for e in page
                    if e.deliveries >= args.max_deliveries or e.idle_ms >= args.idle_ms
                    or not _owned(e.consumer, pods)
                ]  # fmt: skip
                if items:
                    moved = await scripts.dead_letter(
                        args.stream, dlq, args.group, items, min_idle_ms=args.min_idle_ms
                    )
                    totals["moved"] += moved.dead_lettered
        except (OSError, ConnectionError, TimeoutError) as exc:
            print(f"mover: Redis away: {type(exc).__name__}", flush=True)
        except Exception as exc:  # redis errors during a restart: report and go on
            print(f"mover: {type(exc).__name__}: {exc}", flush=True)
        with_stop = asyncio.ensure_future(stop.wait())
        await asyncio.wait([with_stop], timeout=args.interval)
        with_stop.cancel()
    print(f"mover: done {dict(totals)}", flush=True)
    await client.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.chaos")
    sub = parser.add_subparsers(dest="command", required=True)
    mover = sub.add_parser("mover")
    mover.add_argument("redis_url")
    mover.add_argument("stream")
    mover.add_argument("group")
    mover.add_argument("--pods", default="", help="live consumer names, comma-separated")
    mover.add_argument("--max-deliveries", type=int, default=1000)
    mover.add_argument("--idle-ms", type=int, default=3_600_000)
    mover.add_argument("--min-idle-ms", type=int, default=5_000)
    mover.add_argument("--interval", type=float, default=1.0)
    mover.add_argument("--once-chunked", action="store_true")
    mover.add_argument("--gone", default="", help="consumers whose pod is gone (chunked mode)")
    mover.add_argument("--chunk", type=int, default=1000)
    mover.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args(argv)
    asyncio.run(_mover(args))


LOAD_GROUP = "writers"


def run_load(
    redis_server: RedisServer, pg: PostgresServer, names: Callable[[str], str],
    consumers: int, per_stream: int, timeout: float,
) -> str:  # fmt: skip
    client = redis.Redis.from_url(redis_server.url)
    streams = [names(f"load{i}") for i in range(consumers)]
    databases = [f"load_{s.rsplit('-', 1)[1]}_{i}" for i, s in enumerate(streams)]
    for db in databases:
        pg.psql(f"CREATE DATABASE {db}")
    lock = threading.Lock()
    started = time.monotonic()
    producers = [Producer(redis_server.url, s, per_stream, 100, lock, chunk=2000) for s in streams]
    for p in producers:
        p.start()
    for p in producers:
        p.join(timeout)
        assert p.error is None, p.error
    produced_s = time.monotonic() - started
    total = consumers * per_stream
    procs = [
        ConsumerProcess(redis_url=redis_server.url, database_url=pg.url(db), stream=s,
                        group=LOAD_GROUP, model="tests.support.models:Product", consumer=f"pod-{i}")
        for i, (s, db) in enumerate(zip(streams, databases, strict=True))
    ]  # fmt: skip
    started = time.monotonic()
    try:
        for proc in procs:
            proc.start(wait_ready=False)
        for s in streams:
            wait_until(lambda s=s: drained(client, s, LOAD_GROUP, per_stream), timeout, 0.5,
                       f"{s} drained")  # fmt: skip
        consumed_s = time.monotonic() - started
        for proc in procs:
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in procs]
        assert codes == [0] * consumers
    finally:
        for proc in procs:
            proc.kill()
    lines = [
        f"load: {consumers} StreamConsumers x {per_stream:,} messages (1% poison) = {total:,}, "
        f"one redis-server, one PostgreSQL, {os.cpu_count()} cores "
        f"(load average {os.getloadavg()[0]:.1f} at the end: other work shares them)",
        f"produce: {produced_s:.1f}s ({total / produced_s:,.0f}/s, pipelined XADD)",
        f"consume: {consumed_s:.1f}s from launching the processes to the last ack "
        f"({total / consumed_s:,.0f} messages/s, {total / consumed_s / consumers:,.0f} per "
        "consumer)",
        f"{'stream':<6} {'rows':>9} {'dead':>6} {'lost':>5} {'dup':>5} {'unexp':>5} invariant",
    ]
    all_ok = True
    for i, (s, db, p) in enumerate(zip(streams, databases, producers, strict=True)):
        v = check_invariant(p.ids, p.poison, table_ids(pg, pg.url(db), "products"),
                            dead_letters(client, s + ":dlq"))  # fmt: skip
        all_ok &= v.ok and v.good_dead_lettered == 0 and v.produced == per_stream
        lines.append(
            f"{i:<6} {v.stored:>9,} {v.dead_lettered:>6,} {v.lost:>5} "
            f"{v.duplicated_rows + v.duplicated_dead_letters:>5} {v.unexpected:>5} "
            f"{'HOLDS' if v.ok else 'BROKEN'}"
        )
    report = "\n".join(lines)
    print("\n" + report)
    write_report(f"load-{consumers}x{per_stream}", report)
    assert all_ok, report
    return report


def write_report(name: str, text: str) -> Path:
    """Keep the printed tables next to the test logs, for the report."""
    path = ROOT / ".build" / "test-logs" / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return path


if __name__ == "__main__":
    main()
