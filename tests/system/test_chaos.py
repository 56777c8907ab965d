"""Chaos: consumers SIGKILLed and SIGSTOPped, PostgreSQL and Redis restarted, the mover killed.

After a full drain, every produced entry ID must be in exactly one of {table, dead-letter
stream} (Jepsen's total-queue check): lost 0, duplicated 0, unexpected 0, and every poison
message dead-lettered with reason `invalid`.

Redis runs with AOF (`appendfsync everysec`) and is restarted cleanly (SIGTERM): redis-server
fsyncs the AOF on shutdown, so nothing acknowledged may be lost, and the test asserts lost = 0.
A SIGKILL of Redis instead may lose acknowledged writes that were not yet written to the AOF:
with `everysec`, Redis write()s the AOF before it replies, so a killed *process* loses nothing
that reached the kernel; a crash of the *machine* loses what was not yet fsynced (up to about a
second, two when fsync stalls and Redis postpones the write). A lost XADD of the producer is a
message gone although the producer was told it was stored: no consumer can help that, it is Redis's
own durability contract, which `appendfsync always` closes. A lost XACK only means a redelivery,
which the idempotent insert absorbs; a dead-letter copy and its XACK are one script, whose writes
reach the AOF together, so they are lost together and the entry is simply handled again.
`test_redis_sigkill_loses_at_most_the_unsynced_second` checks exactly that: it bounds Redis's loss
by two seconds of producer writes, and against the entries Redis still has after the crash the
invariant holds in full.

`make test` runs the short version (20,000 messages); `make chaos` (STREAMSCALE_CHAOS=full) the
full one: 1,000,000 messages.
"""

from __future__ import annotations

import dataclasses
import os
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from tests.support.chaos import (
    Fleet,
    MoverProcess,
    Producer,
    Verdict,
    check_invariant,
    dead_letters,
    drained,
    group_state,
    run_load,
    table_ids,
    write_report,
)
from tests.support.consumers import ConsumerProcess, produce, product, wait_until
from tests.support.servers import PostgresServer, RedisServer, running_redis

GROUP = "writers"
MODEL = "tests.support.models:Product"


@dataclasses.dataclass
class Plan:
    """How hard to shake the system."""

    messages: int
    consumers: int = 3
    poison_every: int = 100
    rate: float | None = None
    """Producer messages per second (None: as fast as it can)."""
    batch_size: int = 200
    claim_idle_ms: int = 2000
    kill_every: tuple[float, float] = (4.0, 7.0)
    stop_at: float = 6.0
    stop_for: float = 5.0
    """SIGSTOP past the claim idle time: the others claim its entries meanwhile."""
    postgres_restart_at: float = 10.0
    redis_restart_at: float = 15.0
    mover_restart_at: float = 12.0
    ghost_entries: int = 500
    """A consumer with no pod takes this many entries and never acks: the mover's work."""
    deadline: float = 100.0


SHORT = Plan(messages=20_000, rate=1500.0)
FULL = Plan(
    messages=1_000_000, consumers=4, rate=None, batch_size=500, claim_idle_ms=3000,
    kill_every=(3.0, 6.0), stop_at=20.0, stop_for=8.0, postgres_restart_at=45.0,
    redis_restart_at=75.0, mover_restart_at=60.0, ghost_entries=10_000,
    deadline=1500.0,
)  # fmt: skip


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    with running_redis(persistent=True) as server:
        yield server


def run_chaos(
    plan: Plan, server: RedisServer, pg: PostgresServer, database_url: str, stream: str
) -> tuple[Verdict, dict[str, object]]:
    rng = random.Random(int(os.environ.get("STREAMSCALE_CHAOS_SEED", "6")))
    started = time.monotonic()
    events: list[str] = []

    def log(what: str) -> None:
        line = f"[{time.monotonic() - started:6.1f}s] {what}"
        events.append(line)
        print(line, flush=True)

    client = redis.Redis.from_url(server.url)
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    lock = threading.Lock()
    producer = Producer(server.url, stream, plan.messages, plan.poison_every, lock,
                        rate=plan.rate)  # fmt: skip
    fleet = Fleet(
        plan.consumers, log, redis_url=server.url, database_url=database_url, stream=stream,
        group=GROUP, model=MODEL, batch_size=plan.batch_size, claim_idle_ms=plan.claim_idle_ms,
        max_deliveries=1000, shutdown_grace_seconds=20,
    )  # fmt: skip
    # The operator's mover, told the fleet's pods are alive: the idle and max-deliveries rules
    # are generous, so it moves only what a consumer with no pod ("ghost") holds, and only
    # once that is idle for a second, before the live consumers' claim idle time.
    mover = MoverProcess(server.url, stream, GROUP, "--pods", ",".join(fleet.names),
                         "--max-deliveries", "1000", "--idle-ms", "120000",
                         "--min-idle-ms", "1000", "--interval", "0.5")  # fmt: skip
    # Before the pods start, a consumer with no pod takes the first entries and vanishes.
    producer.start()
    wait_until(lambda: len(producer.ids) >= plan.ghost_entries or producer.done.is_set(), 60)
    taken = client.xreadgroup(GROUP, "ghost", {stream: ">"}, count=plan.ghost_entries)
    stranded = {i.decode() for i, _ in taken[0][1]}
    mover.start()
    fleet.start_all()
    log(f"{plan.consumers} consumers ready, producing {plan.messages:,}; "
        f"{len(stranded):,} entries stranded on a gone consumer")  # fmt: skip
    next_kill = plan.kill_every[0]
    done: set[str] = set()
    try:
        while True:
            now = time.monotonic() - started
            assert now < plan.deadline, f"not drained within {plan.deadline}s"
            assert producer.error is None, producer.error
            fleet.check_alive()  # a consumer that exits by itself is a bug, not chaos
            if now >= next_kill:
                fleet.kill_random(rng)
                next_kill = now + rng.uniform(*plan.kill_every)
            if now >= plan.stop_at and "stop" not in done:
                done.add("stop")
                fleet.sigstop(rng.choice(fleet.names))
            if now >= plan.stop_at + plan.stop_for and "cont" not in done:
                done.add("cont")
                fleet.sigcont()
            if now >= plan.postgres_restart_at and "pg" not in done:
                done.add("pg")
                log("PostgreSQL restart (fast shutdown)")
                pg.restart()
                log("PostgreSQL back")
            if now >= plan.mover_restart_at and "mover" not in done:
                done.add("mover")
                mover.kill()
                log("SIGKILL mover, restarted")
                mover.start()
            if now >= plan.redis_restart_at and "redis" not in done:
                done.add("redis")
                with lock:
                    log("Redis restart (SIGTERM, AOF reload)")
                    server.stop()
                    server.start()
                    log("Redis back")
            all_done = len(done) == 5 and producer.done.is_set()
            if all_done and drained(client, stream, GROUP, plan.messages):
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        log(f"drained in {elapsed:.1f}s")
        codes = fleet.terminate_all()
        assert set(codes.values()) == {0}, codes
        assert mover.stop() == 0, mover.output()
    except BaseException:
        print(fleet.output()[-20_000:])
        print(mover.output()[-5000:])
        print(diagnose(client, stream, producer, pg, database_url))
        fleet.kill_all()
        mover.kill()
        raise
    info = group_state(client, stream, GROUP)
    assert info["pending"] == 0, info
    # Every pod left the group on SIGTERM; the ghost, with nothing pending, the mover removed.
    assert info["consumers"] == 0, client.xinfo_consumers(stream, GROUP)
    rows = table_ids(pg, database_url, "products")
    letters = dead_letters(client, stream + ":dlq")
    verdict = check_invariant(producer.ids, producer.poison, rows, letters, stranded)
    figures = {
        "seconds": round(elapsed, 1),
        "messages_per_second": round(plan.messages / elapsed),
        "consumer_kills": fleet.kills,
        "mover_kills": mover.kills,
        "xlen": client.xlen(stream),
    }
    title = (
        f"chaos {plan.messages:,} messages, {plan.consumers} consumers: {fleet.kills} SIGKILLs, "
        f"1 SIGSTOP ({plan.stop_for:.0f}s > claim idle {plan.claim_idle_ms / 1000:.0f}s), "
        f"1 PostgreSQL restart, 1 Redis restart, {mover.kills} mover SIGKILL, "
        f"{len(stranded):,} entries stranded on a gone consumer; "
        f"drained in {elapsed:.0f}s ({figures['messages_per_second']:,}/s)"
    )
    passes = [line for line in mover.output().splitlines() if line.startswith("mover: moved")]
    report = verdict.table(title) + f"\nmover passes that moved or removed something: {passes}"
    print("\n" + report)
    write_report(f"chaos-{plan.messages}", report + "\n" + "\n".join(events))
    return verdict, figures


def diagnose(
    client: redis.Redis, stream: str, producer: Producer, pg: PostgresServer, database_url: str
) -> str:
    """What the group looks like when a run fails to drain."""
    lines = [f"produced {len(producer.ids):,} done={producer.done.is_set()}"]
    try:
        lines.append(f"XLEN {client.xlen(stream)}; group {group_state(client, stream, GROUP)}")
        lines += [f"consumer {c}" for c in client.xinfo_consumers(stream, GROUP)]
        lines.append(f"XPENDING {client.xpending(stream, GROUP)}")
        lines += [f"  {p}" for p in client.xpending_range(stream, GROUP, "-", "+", 10)]
        lines.append(f"rows {len(table_ids(pg, database_url, 'products')):,}")
    except Exception as exc:
        lines.append(f"diagnosis failed: {exc!r}")
    return "\n".join(lines)


def assert_holds(verdict: Verdict, total: int, poison_every: int) -> None:
    assert verdict.stranded > 0 and verdict.stranded_moved > 0, "the mover moved nothing"
    assert verdict.stranded_wrong_reason == 0
    assert verdict.produced == total
    assert verdict.poison == total // poison_every
    assert verdict.lost == 0, verdict.lost_sample
    assert verdict.in_both == 0
    assert verdict.duplicated_rows == 0
    assert verdict.duplicated_dead_letters == 0
    assert verdict.unexpected == 0
    assert verdict.poison_stored == 0
    assert verdict.poison_not_invalid == 0
    assert verdict.good_dead_lettered == 0
    assert verdict.stored + verdict.dead_lettered == total
    assert verdict.ok


@pytest.mark.timeout(180)
def test_chaos_short(
    aof_redis: RedisServer, fresh_postgres: PostgresServer, names: Callable[[str], str]
) -> None:
    """20,000 messages through 3 consumers and the mover while everything is shaken once."""
    fresh_postgres.psql("CREATE DATABASE chaos")
    url = fresh_postgres.url("chaos")
    verdict, figures = run_chaos(SHORT, aof_redis, fresh_postgres, url, names("chaos"))
    assert_holds(verdict, SHORT.messages, SHORT.poison_every)
    assert figures["consumer_kills"] >= 2
    assert figures["xlen"] == SHORT.messages


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(
    os.environ.get("STREAMSCALE_CHAOS") != "full", reason="make chaos (STREAMSCALE_CHAOS=full)"
)
def test_chaos_full(
    aof_redis: RedisServer, fresh_postgres: PostgresServer, names: Callable[[str], str]
) -> None:
    """1,000,000 messages, 1% poison, the whole soak."""
    fresh_postgres.psql("CREATE DATABASE chaos")
    url = fresh_postgres.url("chaos")
    verdict, figures = run_chaos(FULL, aof_redis, fresh_postgres, url, names("chaos"))
    assert_holds(verdict, FULL.messages, FULL.poison_every)
    assert figures["xlen"] == FULL.messages


@pytest.mark.timeout(120)
def test_mover_sigkilled_mid_move_then_rerun_dead_letters_each_entry_exactly_once(
    redis_server: RedisServer, names: Callable[[str], str]
) -> None:
    """50,000 stranded entries, the mover killed in the middle and run again: no duplicates."""
    client = redis.Redis.from_url(redis_server.url)
    stream = names("stranded")
    dlq = stream + ":dlq"
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ids = produce(client, stream, (product(n) for n in range(50_000)), chunk=5000)
    # A consumer that took everything and died: all 50,000 pending on "ghost".
    for _ in range(10):
        client.xreadgroup(GROUP, "ghost", {stream: ">"}, count=5000)
    assert group_state(client, stream, GROUP)["pending"] == 50_000
    time.sleep(0.3)
    args = ("--once-chunked", "--gone", "ghost", "--chunk", "1000", "--pause", "0.03",
            "--min-idle-ms", "200", "--max-deliveries", "1000", "--idle-ms", "3600000")  # fmt: skip
    mover = MoverProcess(redis_server.url, stream, GROUP, *args).start()
    kills = []
    try:
        for threshold in (5_000, 20_000):
            wait_until(lambda t=threshold: client.xlen(dlq) >= t, 60, 0.005, f"{threshold} moved")
            mover.kill()
            kills.append(client.xlen(dlq))
            mover.start()
        assert mover.proc is not None
        assert mover.proc.wait(90) == 0, mover.output()
    finally:
        mover.kill()
    letters = dead_letters(client, dlq)
    original = [d["x-original-id"] for d in letters]
    print(f"\nmover SIGKILLed at {kills} dead letters; {len(original):,} in the DLQ at the end")
    assert 0 < kills[0] < 50_000 and kills[0] <= kills[1] < 50_000, kills
    assert len(original) == len(set(original)) == 50_000
    assert set(original) == set(ids)
    assert {d["x-reason"] for d in letters} == {"idle"}
    assert group_state(client, stream, GROUP)["pending"] == 0
    assert "mover: done" in mover.output()


@pytest.mark.timeout(120)
def test_redis_sigkill_loses_at_most_the_unsynced_second(
    aof_redis: RedisServer, postgres_server: PostgresServer, database_url: str,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    """With AOF everysec a SIGKILL may lose acknowledged writes of the last second (Redis's own
    contract); against the entries that survived, the invariant still holds."""
    client = redis.Redis.from_url(aof_redis.url)
    stream = names("crash")
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    lock = threading.Lock()
    producer = Producer(aof_redis.url, stream, 12_000, 100, lock, chunk=200, rate=3000)
    consumer = ConsumerProcess(
        redis_url=aof_redis.url, database_url=database_url, stream=stream, group=GROUP,
        model=MODEL, consumer="pod-0", batch_size=100, claim_idle_ms=1000,
    ).start()  # fmt: skip
    producer.start()
    try:
        wait_until(lambda: len(producer.ids) >= 4000, 30, 0.01, "4,000 produced")
        with lock:
            aof_redis.kill()
            acknowledged = list(producer.ids)
            aof_redis.start()
        producer.join(60)
        assert producer.error is None, producer.error
        client = redis.Redis.from_url(aof_redis.url)
        survived = [i.decode() for i, _ in client.xrange(stream)]
        wait_until(lambda: drained(client, stream, GROUP, len(survived)), 60, 0.2, "drained")
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    lost_by_redis = set(acknowledged) - set(survived)
    # A killed process leaves the AOF's page cache to the kernel, so this is usually 0; the bound
    # is Redis's contract for everysec (two seconds when a slow fsync postpones the write).
    assert len(lost_by_redis) <= 6000, len(lost_by_redis)
    poison = producer.poison & set(survived)
    rows = table_ids(postgres_server, database_url, "products")
    verdict = check_invariant(survived, poison, rows, dead_letters(client, stream + ":dlq"))
    report = verdict.table(
        f"Redis SIGKILL: {len(acknowledged):,} acknowledged before the crash, "
        f"{len(lost_by_redis):,} of them lost by Redis (AOF everysec); checked against survivors"
    )
    print("\n" + report)
    write_report("chaos-redis-sigkill", report)
    assert verdict.ok
    assert verdict.good_dead_lettered == 0


# Load ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_load_10_stream_consumers_x_100000(
    redis_server: RedisServer, fresh_postgres: PostgresServer, names: Callable[[str], str]
) -> None:
    run_load(redis_server, fresh_postgres, names, consumers=10, per_stream=100_000, timeout=1500)


@pytest.mark.timeout(60)
async def test_operator_lag_is_right_after_an_aof_rewrite_and_a_redis_restart(
    aof_redis: RedisServer, names: Callable[[str], str]
) -> None:
    from streamscale.core.streams import connect  # noqa: PLC0415
    from streamscale.operator.observing import observe  # noqa: PLC0415

    client = redis.Redis.from_url(aof_redis.url)
    stream = names("lag")
    produce(client, stream, (product(n) for n in range(1000)))
    client.xgroup_create(stream, GROUP, id="0")
    client.xreadgroup(GROUP, "pod-0", {stream: ">"}, count=300)
    client.bgrewriteaof()
    wait_until(lambda: not client.info("persistence")["aof_rewrite_in_progress"], 30, 0.05)
    time.sleep(0.2)
    client.xreadgroup(GROUP, "pod-0", {stream: ">"}, count=700)  # every entry delivered
    aof_redis.stop()
    aof_redis.start()
    wait_until(lambda: _loaded(client), 30, 0.05, "the AOF loaded")  # a busy machine is slow
    reader = connect(aof_redis.url)
    try:
        obs = await observe(reader, stream, GROUP, estimate_limit=10_000)
    finally:
        await reader.aclose()
    assert obs.pending == 1000
    assert obs.lag == 0, f"lag {obs.lag} (estimated: {obs.lag_estimated}) with nothing unread"


def _loaded(client: redis.Redis) -> bool:
    try:
        return client.info("persistence")["loading"] == 0
    except (redis.BusyLoadingError, redis.ConnectionError):
        return False


@pytest.mark.timeout(120)
def test_postgres_restarts_under_load_never_crash_a_consumer(
    redis_server: RedisServer, fresh_postgres: PostgresServer, names: Callable[[str], str]
) -> None:
    """A fast shutdown of PostgreSQL in the middle of inserts is a transient failure: the
    consumer waits and goes on; it never exits."""
    client = redis.Redis.from_url(redis_server.url)
    stream = names("pgrestart")
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    fresh_postgres.psql("CREATE DATABASE restarts")
    url = fresh_postgres.url("restarts")
    producer = Producer(redis_server.url, stream, 30_000, 100, threading.Lock(), chunk=500,
                        rate=3000)  # fmt: skip
    consumer = ConsumerProcess(
        redis_url=redis_server.url, database_url=url, stream=stream, group=GROUP, model=MODEL,
        consumer="pod-0", batch_size=100, pool_size=4,
    ).start()  # fmt: skip
    producer.start()
    try:
        for _ in range(6):
            time.sleep(1.0)
            fresh_postgres.restart()
            assert consumer.proc is not None and consumer.proc.poll() is None, consumer.output()
        producer.join(60)
        wait_until(lambda: drained(client, stream, GROUP, 30_000), 60, 0.2, "drained")
        assert consumer.proc is not None and consumer.proc.poll() is None, consumer.output()
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    # (asyncpg's pool logs its own failed reconnects with a traceback, as a warning.)
    assert " ERROR " not in consumer.output(), consumer.output()
    assert "database unavailable" in consumer.output()
    rows = table_ids(fresh_postgres, url, "products")
    verdict = check_invariant(producer.ids, producer.poison, rows,
                              dead_letters(client, stream + ":dlq"))  # fmt: skip
    assert verdict.ok and verdict.good_dead_lettered == 0, verdict.table("PostgreSQL restarts")
