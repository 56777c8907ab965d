"""What the benchmarks share: servers, the product payload, process watching, metric parsing.

The throwaway redis-server and PostgreSQL come from tests/servers.py (the same ones the tests
use): the repository root goes at the END of sys.path, so the standard `operator` module is
never shadowed by our `operator/` directory.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import redis  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.support.servers import PostgresServer, free_port, http_get, wait_port  # noqa: E402

LOGS = ROOT / ".build" / "bench-logs"


def product(n: int, now: datetime.datetime | None = None) -> dict[str, Any]:
    """The product payload (sku, name, price, url, created_at) of `examples.models:Product`."""
    now = now or datetime.datetime.now(datetime.UTC)
    return {
        "sku": f"SKU-{n:07d}",
        "name": f"Product {n}",
        "price": f"{(n % 1000) + 0.99:.2f}",
        "url": f"https://shop.example/p/{n}",
        "created_at": now.isoformat(),
    }


def fill(client: redis.Redis, stream: str, start: int, count: int, chunk: int = 5000) -> str:
    """XADD `count` product entries (JSON in `data`), pipelined; the last entry ID."""
    last = ""
    for base in range(start, start + count, chunk):
        pipe = client.pipeline(transaction=False)
        for n in range(base, min(base + chunk, start + count)):
            pipe.xadd(stream, {"data": json.dumps(product(n))})
        last = as_str(pipe.execute()[-1])
    return last


def as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def group_state(client: redis.Redis, stream: str, group: str) -> tuple[int, str, int]:
    """(pending, last-delivered-id, consumers) of one group."""
    for info in client.xinfo_groups(stream):
        if as_str(info["name"]) == group:
            return int(info["pending"]), as_str(info["last-delivered-id"]), int(info["consumers"])
    raise LookupError(f"no group {group!r} on {stream!r}")


def blocked_readers(client: redis.Redis) -> int:
    """Connections blocked in XREADGROUP (a consumer only shows in XINFO once served)."""
    return sum(
        1
        for c in client.client_list()
        if "b" in c.get("flags", "") and c.get("cmd", "").startswith("xread")
    )


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float, what: str) -> Any:
    """Poll until `predicate()` is truthy; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def new_database(pg: PostgresServer, name: str) -> str:
    """A fresh database on `pg` with the product table; its URL (postgresql://)."""
    from sqlalchemy.dialects import postgresql  # noqa: PLC0415
    from sqlalchemy.schema import CreateIndex, CreateTable  # noqa: PLC0415

    from examples.models import Product  # noqa: PLC0415 - imports SQLModel, only when needed

    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.psql(f"CREATE DATABASE {name}")
    table: Any = getattr(Product, "__table__")  # noqa: B009 - SQLModel leaves it untyped
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    ddl = [str(CreateTable(table).compile(dialect=dialect))]
    ddl += [str(CreateIndex(i).compile(dialect=dialect)) for i in table.indexes]
    # Bench-only: when each row was written, by the database's clock (the same machine's).
    # Neither contender writes it; it costs one clock read per row for both.
    ddl.append(
        f"ALTER TABLE {table.name} ADD COLUMN stored_at timestamptz NOT NULL "
        "DEFAULT clock_timestamp()"
    )
    pg.psql(";\n".join(ddl), database=name)
    return pg.url(name)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root` and its direct children (PostgreSQL's postmaster and backends)."""
    total = cpu_seconds(root)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == root:
            total += cpu_seconds(int(stat.parent.name))
    return total


def postmaster_pid(pg: PostgresServer) -> int:
    return int((pg.data / "postmaster.pid").read_text().split()[0])


class Watch:
    """Polls /proc/<pid>/status in a thread: the peak of VmRSS samples and the kernel's VmHWM."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss_kb = 0
        self.hwm_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
            elif line.startswith("VmHWM:"):
                self.hwm_kb = max(self.hwm_kb, int(line.split()[1]))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        self._thread.join(2)

    @property
    def peak_mb(self) -> float:
        """The larger of VmHWM and sampled VmRSS, in MiB."""
        return max(self.peak_rss_kb, self.hwm_kb) / 1024


class Process:
    """A child process with its output in .build/bench-logs/<name>.log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = LOGS / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.log.stem} exited with {self.proc.returncode}:\n{self.tail()}"
            )

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        return self.proc.returncode


class Consumer(Process):
    """`python -m streamscale.consumer` with STREAMSCALE_* settings, as the tests run it."""

    def __init__(self, name: str, command: list[str] | None = None, **settings: Any) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "STREAMSCALE_HTTP_PORT": str(self.port),
            "STREAMSCALE_HTTP_HOST": "127.0.0.1",
            "STREAMSCALE_LOG_FORMAT": "console",
        }
        env.pop("PYTHONPATH", None)  # must not shadow the standard `operator`
        env.update({f"STREAMSCALE_{k.upper()}": str(v) for k, v in settings.items()})
        command = command or [sys.executable, "-m", "streamscale.consumer"]
        super().__init__(name, command, env)

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.port, path)

    def ready(self) -> bool:
        self.check_alive()
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout: float = 60) -> None:
        wait_port_or_exit(self, timeout)
        wait_for(self.ready, timeout, 0.05, f"{self.log.stem} to be ready")

    def histogram(self, name: str) -> list[tuple[float, float]]:
        """Cumulative buckets (upper bound, count) of histogram `name` on /metrics."""
        status, text = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        buckets: list[tuple[float, float]] = []
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name + "_bucket":
                    buckets.append((float(s.labels["le"]), float(s.value)))
        return sorted(buckets)


def wait_port_or_exit(proc: Process, timeout: float) -> None:
    port = getattr(proc, "port", None)
    if port is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        with contextlib.suppress(TimeoutError):
            wait_port(port, 0.5)
            return
    raise TimeoutError(f"{proc.log.stem} does not listen on {port}")


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding q."""
    if not buckets or buckets[-1][1] == 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    counts = [count for _, count in buckets]
    i = bisect.bisect_left(counts, rank)
    upper, count = buckets[i]
    if math.isinf(upper):
        return buckets[i - 1][0] if i else math.nan
    lower, below = (buckets[i - 1][0], buckets[i - 1][1]) if i else (0.0, 0.0)
    if count == below:
        return upper
    return lower + (upper - lower) * (rank - below) / (count - below)


def histogram_delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Bucket counts observed between two scrapes."""
    old = dict(before)
    return [(le, count - old.get(le, 0.0)) for le, count in after]


@contextlib.contextmanager
def stopping(proc: Process) -> Iterator[Process]:
    """Stop `proc` however the block ends."""
    try:
        yield proc
    finally:
        proc.stop()
