"""One stream against N shards on a local Redis Cluster: produce and consume rates, side by side.

On one local 3-master Redis Cluster (no replicas: nothing here measures replication), for one
stream `{bench}` and for the logical stream `bench` sharded into N = 3 and 6 (`{bench:0}` ..):
1. produce M product entries with `streamscale produce`'s code (pipelined, each entry routed by
   its partition key), timed;
2. one `streamscale consume` process, started and ready, then paused (SIGSTOP) while the
   entries are produced, stores them into PostgreSQL (the built-in `stream_events` table): the
   time from SIGCONT to the last ack;
3. check the invariant: every produced (stream, ID) is a row exactly once, nothing pending.
Each line prints messages/s and the ratio against the one-stream run of the same session.

Run: `cd / && /path/to/repo/.venv/bin/python /path/to/repo/bench/shards_bench.py [--messages N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: F401 - puts the repository at the end of sys.path

from streamscale.cli import producing
from streamscale.core.shards import shard_streams
from streamscale.core.streams import connect
from tests.support.clusters import LocalCluster
from tests.support.consumers import ConsumerProcess, wait_until
from tests.support.servers import running_postgres

GROUP = "bench"


async def produce(url: str, stream: str, count: int, shards: int) -> float:
    client = connect(url)
    try:
        started = time.perf_counter()
        summary = await producing.produce(
            client, stream, count, producing.Generator(seed=1), bulk=True, pipeline_size=500,
            shards=shards,
        )  # fmt: skip
        seconds = time.perf_counter() - started
    finally:
        await client.aclose()
    assert summary.produced == count and summary.error is None, summary
    return count / seconds


def race(cluster: LocalCluster, pg_url: str, stream: str, shards: int, count: int) -> Rates:
    """A ready consumer on empty shards; then produce `count` and wait until all are acked."""
    names = shard_streams(stream, shards) if shards > 1 else [stream]
    client = cluster.client()
    for name in names:
        client.xgroup_create(name, GROUP, id="0", mkstream=True)
    settings = {"redis_url": cluster.url, "database_url": pg_url, "stream": stream,
                "shards": shards, "group": GROUP}  # fmt: skip
    consumer = ConsumerProcess(**settings).start()  # imports and connections before the clock
    try:

        def done() -> bool:
            groups = [client.xinfo_groups(name)[0] for name in names]
            return sum(g["entries-read"] or 0 for g in groups) == count and all(
                g["pending"] == 0 for g in groups
            )

        # Paused while the backlog is produced, so the producer's rate does not bound the
        # consumer's: the clock runs from SIGCONT to the last ack.
        assert consumer.proc is not None
        consumer.proc.send_signal(signal.SIGSTOP)
        try:
            produced = asyncio.run(produce(cluster.url, stream, count, shards))
        finally:
            consumer.proc.send_signal(signal.SIGCONT)
        started = time.perf_counter()
        wait_until(done, 600, 0.02, "every entry acked")
        seconds = time.perf_counter() - started
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
        client.close()
    return Rates(produced, count / seconds)


@dataclasses.dataclass
class Rates:
    produce: float
    """Entries per second into the shards (pipelined, routed by partition key)."""
    stored: float
    """Entries per second through the consumer: a backlog of `count`, from SIGCONT to the last
    ack (it was started, ready and then paused before the entries were produced)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    cluster = LocalCluster(masters=3, replicas_per_master=0)
    cluster.start()
    try:
        with running_postgres() as pg:
            results = []
            for label, stream, shards in (
                ("one stream {bench}", "{bench}", 1),
                ("3 shards {bench3:0..2}", "bench3", 3),
                ("6 shards {bench6:0..5}", "bench6", 6),
            ):
                database = label.split()[0] + str(shards)
                pg.psql(f"CREATE DATABASE db{database}")
                url = pg.url(f"db{database}")
                rates = race(cluster, url, stream, shards, args.messages)
                rows = pg.psql("SELECT count(DISTINCT (stream, stream_id)) FROM stream_events",
                               f"db{database}")  # fmt: skip
                assert int(rows) == args.messages, f"{label}: {rows} rows"
                results.append((label, rates.produce, rates.stored))
    finally:
        cluster.close()
    print(f"\n{args.messages:,} entries each; one consumer process (2 readers); 3 masters\n")
    print(f"{'layout':<26} {'produce/s':>10} {'ratio':>6} {'stored/s':>10} {'ratio':>6}  invariant")
    _, base_p, base_c = results[0]
    for label, produced, consumed in results:
        print(f"{label:<26} {produced:>10,.0f} {produced / base_p:>5.2f}x {consumed:>10,.0f}"
              f" {consumed / base_c:>5.2f}x  every entry a row, once")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
