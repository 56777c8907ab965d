"""The consumer benchmark: a tutorial-style consumer loop against `streamscale consume`, in one run.

Phases, on one throwaway redis-server and one throwaway PostgreSQL:
1. Fill a source stream with N-1 product entries (the product payload), once.
2. Throughput, for each contender: COPY the source to the contender's own stream, create its
   group at `$` (nothing to read), start the contender on a fresh database, wait until all its
   consumers are blocked in XREADGROUP, then start the clock: XGROUP SETID to 0 and XADD the
   N-th entry (which wakes the blocked readers). The clock stops when the group has delivered
   the N-th entry and nothing is pending (every entry acked after its commit). Row counts are
   checked. Process start-up and imports are therefore outside the measurement.
3. Latency: a fresh consumer on a fresh database, a producer paced at R messages/s for D seconds
   (1 s warm-up excluded). End-to-end latency is `stored_at - created_at` per row: `created_at`
   is the producer's clock (microseconds) taken just before its XADD, `stored_at` a bench-only
   column `DEFAULT clock_timestamp()` (the database's clock, same machine) set as the row is
   inserted. The consumer's own `streamscale_end_to_end_seconds` histogram (entry-ID millisecond
   to after XACK, interpolated inside buckets) is printed next to it as a cross-check.
Peak RSS is the consumer's VmHWM (and sampled VmRSS) from /proc/<pid>/status, over phases 2-3.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from common import (
    LOGS,
    ROOT,
    Consumer,
    Process,
    Watch,
    as_str,
    blocked_readers,
    cpu_seconds,
    fill,
    group_state,
    histogram_delta,
    histogram_quantile,
    new_database,
    postmaster_pid,
    product,
    tree_cpu_seconds,
    wait_for,
)

from tests.support.servers import PostgresServer, running_postgres, running_redis

SOURCE = "bench:source"
MODEL = "examples.models:Product"
TABLE = "product"

TARGET_RATIO = 8.0
TARGET_PEER_RATIO = 2.0
TARGET_CPU_US = 6.0
TARGET_RSS_MB = 80.0
TARGET_P99_MS = 25.0


@dataclasses.dataclass
class Throughput:
    name: str
    messages: int
    seconds: float
    cpu_seconds: float
    """The contender's own CPU time during the race."""
    servers_cpu_seconds: tuple[float, float]
    """PostgreSQL's (postmaster and backends) and redis-server's CPU time during the race."""
    peak_rss_mb: float | None = None

    @property
    def cpu_us_per_message(self) -> float:
        """The contender's own CPU time per message (less sensitive to a busy machine)."""
        return self.cpu_seconds / self.messages * 1e6

    def us_per_message(self, seconds: float) -> float:
        return seconds / self.messages * 1e6

    @property
    def cpu_breakdown(self) -> str:
        """CPU µs per message: contender / PostgreSQL / Redis."""
        pg, rs = self.servers_cpu_seconds
        return (
            f"{self.cpu_us_per_message:.1f} / {self.us_per_message(pg):.1f} / "
            f"{self.us_per_message(rs):.1f}"
        )

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else math.nan


@dataclasses.dataclass
class Latency:
    rate: float
    messages: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    id_p50_ms: float
    id_p99_ms: float
    hist_p50_ms: float
    hist_p99_ms: float
    over_target: float
    """Share of rows stored more than TARGET_P99_MS after created_at."""
    hist_over_target: float
    """Share of the histogram's observations above TARGET_P99_MS (a bucket bound: exact)."""
    peak_rss_mb: float


@dataclasses.dataclass
class Bench:
    args: argparse.Namespace
    client: redis.Redis
    redis_url: str
    redis_pid: int
    pg: PostgresServer
    pg_pid: int

    def consumer_settings(self, stream: str, database_url: str, **extra: Any) -> dict[str, Any]:
        s: dict[str, Any] = {
            "redis_url": self.redis_url,
            "database_url": database_url,
            "stream": stream,
            "group": "streamscale",
            "consumer": "bench",
            "model": MODEL,
        }
        for key in ("batch_size", "concurrency", "pool_size"):
            value = extra.pop(key, getattr(self.args, key))
            if value is not None:
                s[key] = value
        return {**s, **extra}

    def command(self) -> list[str] | None:
        return shlex.split(self.args.consumer_cmd) if self.args.consumer_cmd else None

    def prepare(self, stream: str, group: str) -> None:
        self.client.delete(stream)
        self.client.copy(SOURCE, stream)
        self.client.xgroup_create(stream, group, id="$")

    def race(
        self, proc: Process, stream: str, group: str, consumers: int
    ) -> tuple[float, float, tuple[float, float]]:
        """Release the N entries to the ready contender; seconds until all are acked, and the
        CPU seconds meanwhile of the contender, and of PostgreSQL and Redis."""
        n = self.args.messages

        def reading() -> bool:
            proc.check_alive()
            return blocked_readers(self.client) >= consumers

        wait_for(
            reading, 60, 0.02, f"{consumers} reader(s) of {proc.log.stem} blocked in XREADGROUP"
        )
        cpu = cpu_seconds(proc.pid)
        pg_cpu, redis_cpu = tree_cpu_seconds(self.pg_pid), cpu_seconds(self.redis_pid)
        started = time.perf_counter()
        self.client.execute_command("XGROUP", "SETID", stream, group, "0", "ENTRIESREAD", "0")
        last = as_str(self.client.xadd(stream, {"data": json.dumps(product(n - 1))}))

        def drained() -> bool:
            proc.check_alive()
            pending, delivered, _ = group_state(self.client, stream, group)
            return pending == 0 and delivered == last

        wait_for(drained, max(120.0, n / 300), 0.01, f"{proc.log.stem} to ack {n:,} entries")
        seconds = time.perf_counter() - started
        servers = (
            tree_cpu_seconds(self.pg_pid) - pg_cpu,
            cpu_seconds(self.redis_pid) - redis_cpu,
        )
        return seconds, cpu_seconds(proc.pid) - cpu, servers

    def count_rows(self, database: str) -> int:
        return int(self.pg.psql(f"SELECT count(*) FROM {TABLE}", database=database))

    def baseline(self) -> Throughput:
        n, stream, group = self.args.messages, "bench:baseline", "inserters"
        self.prepare(stream, group)
        url = new_database(self.pg, "bench_baseline")
        proc = Process(
            "baseline",
            [sys.executable, str(ROOT / "bench" / "baseline_tutorial_loop.py"),
             "--redis-url", self.redis_url, "--stream", stream, "--group", group,
             "--database-url", url.replace("postgresql://", "postgresql+asyncpg://", 1)],
        )  # fmt: skip
        try:
            seconds, cpu, servers = self.race(proc, stream, group, consumers=3)
        finally:
            proc.stop(timeout=8)
        check_rows(self.count_rows("bench_baseline"), n, "baseline")
        return Throughput(
            "baseline: tutorial loop (3 workers, COUNT 100, ORM)", n, seconds, cpu, servers
        )

    def faststream(self) -> Throughput:
        """The peer users would pick instead (bench/faststream_peer.py), one process."""
        n, stream, group = self.args.messages, "bench:faststream", "faststream"
        self.prepare(stream, group)
        url = new_database(self.pg, "bench_faststream")
        proc = Process(
            "faststream",
            [sys.executable, str(ROOT / "bench" / "faststream_peer.py"),
             "--redis-url", self.redis_url, "--stream", stream, "--group", group,
             "--database-url", url],
        )  # fmt: skip
        try:
            seconds, cpu, servers = self.race(proc, stream, group, consumers=1)
        finally:
            proc.stop(timeout=8)
        check_rows(self.count_rows("bench_faststream"), n, "faststream")
        return Throughput(
            "peer: FastStream batch subscriber + asyncpg unnest", n, seconds, cpu, servers
        )

    def streamscale(self, label: str = "", **settings: Any) -> Throughput:
        n, stream, group = self.args.messages, "bench:streamscale", "streamscale"
        self.prepare(stream, group)
        url = new_database(self.pg, "bench_streamscale")
        config = self.consumer_settings(stream, url, **settings)
        proc = Consumer("consumer-throughput", self.command(), **config)
        watch = Watch(proc.pid)
        profiler = None
        try:
            proc.wait_ready()
            if self.args.profile:
                profiler = start_profiler(proc.pid, "consumer-throughput", self.args.profile)
            concurrency = int(config.get("concurrency", 0)) or default_concurrency()
            seconds, cpu, servers = self.race(proc, stream, group, consumers=concurrency)
        finally:
            watch.stop()
            proc.stop()
            if profiler is not None:
                finish_profiler(profiler)
        check_rows(self.count_rows("bench_streamscale"), n, "streamscale")
        name = "streamscale consume" + (f" ({label})" if label else "")
        return Throughput(name, n, seconds, cpu, servers, watch.peak_mb)

    def latency(self) -> Latency:
        args, stream = self.args, "bench:latency"
        self.client.delete(stream)
        url = new_database(self.pg, "bench_latency")
        proc = Consumer("consumer-latency", self.command(), **self.consumer_settings(stream, url))
        watch = Watch(proc.pid)
        try:
            proc.wait_ready()
            warmup = min(1.0, args.latency_seconds / 4)
            before: list[tuple[float, float]] = []

            def after_warmup() -> None:
                before.extend(proc.histogram("streamscale_end_to_end_seconds"))

            sent, elapsed, measured_from = paced_produce(
                self.client, stream, args.rate, args.latency_seconds + warmup, warmup,
                after_warmup,
            )  # fmt: skip
            wait_for(lambda: self.count_rows("bench_latency") >= sent, 60, 0.05, "the paced rows")
            time.sleep(0.1)  # the last batches' XACK and histogram update follow the commit
            hist = histogram_delta(proc.histogram("streamscale_end_to_end_seconds"), before)
        finally:
            watch.stop()
            proc.stop()
        e2e = "extract(epoch FROM stored_at - created_at) * 1000"
        by_id = (
            "extract(epoch FROM stored_at - "
            "to_timestamp(split_part(stream_id, '-', 1)::bigint / 1000.0)) * 1000"
        )
        row = self.pg.psql(
            f"SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY {e2e}), "
            f"percentile_cont(0.99) WITHIN GROUP (ORDER BY {e2e}), max({e2e}), "
            f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {by_id}), "
            f"percentile_cont(0.99) WITHIN GROUP (ORDER BY {by_id}), "
            f"avg(({e2e} > {TARGET_P99_MS})::int) "
            f"FROM {TABLE} WHERE created_at >= to_timestamp({measured_from})",
            database="bench_latency",
        ).split("|")
        count, p50, p99, worst, id50, id99, over = int(row[0]), *map(float, row[1:])
        return Latency(
            rate=sent / elapsed, messages=count, p50_ms=p50, p99_ms=p99, max_ms=worst,
            id_p50_ms=id50, id_p99_ms=id99,
            hist_p50_ms=histogram_quantile(0.5, hist) * 1000,
            hist_p99_ms=histogram_quantile(0.99, hist) * 1000,
            over_target=over, hist_over_target=share_above(TARGET_P99_MS / 1000, hist),
            peak_rss_mb=watch.peak_mb,
        )  # fmt: skip


def share_above(bound: float, buckets: list[tuple[float, float]]) -> float:
    """Share of a histogram's observations above `bound`, which must be a bucket bound."""
    counts = dict(buckets)
    total = buckets[-1][1] if buckets else 0.0
    if bound not in counts or total == 0:
        return math.nan
    return 1 - counts[bound] / total


def default_concurrency() -> int:
    from streamscale.consumer.settings import ConsumerSettings  # noqa: PLC0415

    return int(ConsumerSettings.model_fields["concurrency"].default)


def check_rows(count: int, expected: int, who: str) -> None:
    if count != expected:
        raise RuntimeError(f"{who} stored {count:,} rows, expected {expected:,}")


def paced_produce(
    client: redis.Redis,
    stream: str,
    rate: float,
    seconds: float,
    warmup: float,
    on_warm: Any,
) -> tuple[int, float, float]:
    """XADD at `rate`/s for `seconds`, each entry's created_at taken just before it is sent.

    Sends what is due every millisecond (so at most a few entries go together); returns
    (entries sent, seconds spent, epoch time from which rows are measured).
    """
    start = time.perf_counter()
    wall_start = time.time()
    sent, n, warm = 0, 0, False
    while True:
        now = time.perf_counter() - start
        if now >= seconds:
            break
        if not warm and now >= warmup:
            warm = True
            on_warm()
        due = min(int(now * rate) + 1, int(seconds * rate))
        if due > sent:
            pipe = client.pipeline(transaction=False)
            for _ in range(due - sent):
                pipe.xadd(stream, {"data": json.dumps(product(n))})
                n += 1
            pipe.execute()
            sent = due
        else:
            time.sleep(0.001)
    return sent, time.perf_counter() - start, wall_start + warmup


def start_profiler(pid: int, name: str, mode: str) -> subprocess.Popen[bytes]:
    """py-spy record (collapsed stacks) on the consumer until it exits; `native` adds C frames."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise RuntimeError(f"--profile needs py-spy: {sys.executable} -m pip install py-spy")
    out = LOGS / f"{name}.pyspy.txt"
    proc = subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
         "--output", str(out), *(["--native"] if mode == "native" else ["--nonblocking"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)  # py-spy attaches
    return proc


def finish_profiler(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def fmt_ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def report(
    base: Throughput | None,
    peer: Throughput | None,
    ours: Throughput,
    lat: Latency | None,
    args: argparse.Namespace,
) -> bool:
    ratio = ours.rate / base.rate if base else math.nan
    peer_ratio = ours.rate / peer.rate if peer else math.nan
    print()
    print(
        table(
            [
                (
                    "contender",
                    "messages",
                    "seconds",
                    "messages/s",
                    "CPU µs/msg: self / PostgreSQL / Redis",
                ),
                *[
                    (
                        t.name,
                        f"{t.messages:,}",
                        f"{t.seconds:.2f}",
                        f"{t.rate:,.0f}",
                        t.cpu_breakdown,
                    )
                    for t in (base, peer, ours)
                    if t is not None
                ],
            ]
        )
    )
    if base is not None:
        print(f"ratio: streamscale / baseline = {ratio:.2f}x")
    if peer is not None:
        print(
            f"ratio: streamscale / FastStream peer = {peer_ratio:.2f}x messages/s, "
            f"{peer.cpu_us_per_message / ours.cpu_us_per_message:.2f}x less consumer CPU "
            "per message"
        )
    print(
        f"load average (1, 5, 15 min) at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    rss = max(ours.peak_rss_mb or 0.0, lat.peak_rss_mb if lat else 0.0)
    rows = [("target", "wanted", "measured", "result")]
    cpu = ours.cpu_us_per_message
    rows.append(("consumer CPU per message", f"<= {TARGET_CPU_US:.0f} µs", f"{cpu:.1f} µs",
                 verdict(cpu <= TARGET_CPU_US)))  # fmt: skip
    ok = rss <= TARGET_RSS_MB and cpu <= TARGET_CPU_US
    if peer is not None:
        rows.append(("throughput vs FastStream", f">= {TARGET_PEER_RATIO:.0f}x",
                     f"{peer_ratio:.2f}x", verdict(peer_ratio >= TARGET_PEER_RATIO)))  # fmt: skip
        ok = ok and peer_ratio >= TARGET_PEER_RATIO
    if base is not None:
        rows.append(("throughput vs baseline", f">= {TARGET_RATIO:.0f}x", f"{ratio:.2f}x",
                     verdict(ratio >= TARGET_RATIO)))  # fmt: skip
        ok = ok and ratio >= TARGET_RATIO
    rows.append(("consumer peak RSS", f"<= {TARGET_RSS_MB:.0f} MB", f"{rss:.1f} MB",
                 verdict(rss <= TARGET_RSS_MB)))  # fmt: skip
    if lat is not None:
        at = f"@ {lat.rate:,.0f}/s"
        rows += [
            (f"p99 end-to-end {at}", f"<= {TARGET_P99_MS:.0f} ms", fmt_ms(lat.p99_ms),
             verdict(lat.p99_ms <= TARGET_P99_MS)),
            (f"p50 end-to-end {at}", "-", fmt_ms(lat.p50_ms), "info"),
        ]  # fmt: skip
        ok = ok and lat.p99_ms <= TARGET_P99_MS
    print()
    print(table(rows))
    if lat is not None:
        print(
            f"\nlatency method: stored_at (clock_timestamp() at INSERT) - created_at (producer, "
            f"just before XADD), {lat.messages:,} rows after a warm-up; max {fmt_ms(lat.max_ms)}."
            f"\ncross-checks: from the entry ID's millisecond p50 {fmt_ms(lat.id_p50_ms)}, "
            f"p99 {fmt_ms(lat.id_p99_ms)}; consumer histogram streamscale_end_to_end_seconds "
            f"(to XACK, interpolated in buckets) p50 {fmt_ms(lat.hist_p50_ms)}, "
            f"p99 {fmt_ms(lat.hist_p99_ms)}."
            f"\nabove {TARGET_P99_MS:.0f} ms: {100 * lat.over_target:.2f}% of rows stored, "
            f"{100 * lat.hist_over_target:.2f}% of the histogram's observations (to XACK)."
        )
    if args.quick or args.messages < 100_000:
        print(f"(a short run of {args.messages:,} messages: figures are indicative only)")
    return ok


def sweep(bench: Bench) -> None:
    """Throughput of a few settings combinations (fresh database and process each)."""
    rows = [
        ("batch", "concurrency", "pool", "messages/s", "CPU µs/msg: self / PG / Redis", "peak RSS")
    ]
    for batch, conc, pool in [
        (int(b), int(c), int(p))
        for b, c, p in (spec.split(":") for spec in bench.args.sweep.split(","))
    ]:
        t = bench.streamscale(batch_size=batch, concurrency=conc, pool_size=pool)
        rows.append(
            (str(batch), str(conc), str(pool), f"{t.rate:,.0f}", t.cpu_breakdown,
             f"{t.peak_rss_mb:.1f} MB")
        )  # fmt: skip
        print(f"  {rows[-1]}", flush=True)
    print()
    print(table(rows))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="A tutorial-style loop vs `streamscale consume`.")
    p.add_argument("--messages", type=int, default=None, help="entries per contender (200,000)")
    p.add_argument("--quick", action="store_true", help="smoke run: 20,000 messages, 3 s latency")
    p.add_argument("--rate", type=float, default=5000, help="latency phase: messages/s")
    p.add_argument("--latency-seconds", type=float, default=None, help="latency phase (15 s)")
    p.add_argument("--batch-size", type=int, default=None, help="STREAMSCALE_BATCH_SIZE")
    p.add_argument("--concurrency", type=int, default=None, help="STREAMSCALE_CONCURRENCY")
    p.add_argument("--pool-size", type=int, default=None, help="STREAMSCALE_POOL_SIZE")
    p.add_argument("--no-baseline", action="store_true", help="skip the tutorial-style loop")
    p.add_argument("--no-peer", action="store_true", help="skip the FastStream peer")
    p.add_argument("--no-latency", action="store_true", help="skip the latency phase")
    p.add_argument(
        "--sweep", metavar="B:C:P,...", help="only throughput for these batch:concurrency:pool"
    )
    p.add_argument(
        "--profile", nargs="?", const="python", choices=("python", "native"),
        help="py-spy the consumer's throughput run into .build/bench-logs/*.pyspy.txt "
        "(`native`: with C/Cython frames)",
    )  # fmt: skip
    p.add_argument(
        "--consumer-cmd",
        help="run this instead of `python -m streamscale.consumer` (profilers, experiments)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if args.messages is None:
        args.messages = 20_000 if args.quick else 200_000
    if args.latency_seconds is None:
        args.latency_seconds = 3.0 if args.quick else 15.0
    if args.messages < 2:
        p.error("--messages must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    print(
        f"consumer benchmark: {args.messages:,} messages per contender; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; logs in {LOGS.relative_to(ROOT)}/",
        flush=True,
    )
    with running_redis() as rs, running_postgres() as pg:
        client = redis.Redis.from_url(rs.url)
        assert rs.proc is not None
        bench = Bench(args, client, rs.url, rs.proc.pid, pg, postmaster_pid(pg))
        started = time.perf_counter()
        fill(client, SOURCE, 0, args.messages - 1)
        took = time.perf_counter() - started
        print(f"filled {SOURCE} with {args.messages - 1:,} entries in {took:.1f}s", flush=True)
        if args.sweep:
            sweep(bench)
            return 0
        base = None
        if not args.no_baseline:
            base = bench.baseline()
            print(
                f"baseline: {base.rate:,.0f} messages/s ({base.seconds:.2f}s, "
                f"CPU µs/message: {base.cpu_breakdown} self/PostgreSQL/Redis)",
                flush=True,
            )
        peer = None
        if not args.no_peer:
            peer = bench.faststream()
            print(
                f"FastStream peer: {peer.rate:,.0f} messages/s ({peer.seconds:.2f}s, "
                f"CPU µs/message: {peer.cpu_breakdown} self/PostgreSQL/Redis)",
                flush=True,
            )
        ours = bench.streamscale()
        print(
            f"streamscale: {ours.rate:,.0f} messages/s ({ours.seconds:.2f}s, "
            f"CPU µs/message: {ours.cpu_breakdown} self/PostgreSQL/Redis), "
            f"peak RSS {ours.peak_rss_mb:.1f} MB",
            flush=True,
        )
        lat = None
        if not args.no_latency:
            lat = bench.latency()
            print(
                f"latency @ {lat.rate:,.0f}/s: p50 {fmt_ms(lat.p50_ms)}, p99 {fmt_ms(lat.p99_ms)}",
                flush=True,
            )
        client.close()
    ok = report(base, peer, ours, lat, args)
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
