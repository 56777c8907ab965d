"""streamscale on a real Redis Cluster: 3 masters and 3 replicas from Debian's redis-server.

Every component reaches the cluster through `redis+cluster://` seed nodes. Stream names carry
a hash tag (`{orders-...}`) so that the stream, its dead-letter stream and the counter hash
share one slot, which the Lua scripts need; names without one are refused up front.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kmock
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from streamscale.core.deadletter import Scripts, counter_key, read_counts
from streamscale.core.shards import shard_streams
from streamscale.core.streams import connect
from streamscale.operator.observing import observe
from streamscale.operator.reclaiming import Rules, reclaim
from streamscale.operator.redis_failures import classify
from tests.support import kube as h
from tests.support.chaos import check_invariant, dead_letters
from tests.support.clusters import (
    FlowingProducer,
    LocalCluster,
    running_cluster,
    stream_entries,
)
from tests.support.commands import connected_round_trip
from tests.support.consumers import ConsumerProcess, produce, product, wait_until
from tests.support.servers import PostgresServer, RedisServer

GROUP = "writers"
MODEL = "tests.support.models:Product"
STREAMSCALE = str(Path(sys.executable).parent / "streamscale")
FAILOVER_CONSUMER: dict[str, object] = {
    "group": GROUP, "model": MODEL, "consumer": "pod-1", "claim_idle_ms": 1000,
    "max_deliveries": 1000, "batch_size": 50, "block_ms": 200,
}  # fmt: skip
"""The failover tests' consumer: claims within a second, never dead-letters for deliveries
(a failover may redeliver many times), small batches and short blocks so a switch shows."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """One cluster for the module (about 7 s to start); each test uses its own stream names."""
    with running_cluster() as value:
        yield value


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[redis.RedisCluster]:
    value = cluster.client()
    yield value
    value.close()


@pytest.fixture
def tagged() -> Callable[[str], str]:
    """`tagged("orders")` -> `{orders-<token>}`: a stream name with its own hash tag."""
    token = uuid.uuid4().hex[:8]
    return lambda base: "{" + f"{base}-{token}" + "}"


def table_ids(pg: PostgresServer, database_url: str) -> list[str]:
    db = database_url.rsplit("/", 1)[1]
    out = pg.psql("SELECT stream_id FROM products", db)
    return out.split() if out else []


def rows(pg: PostgresServer, database_url: str) -> int:
    """Distinct (stream, entry ID) rows of the StreamProduct table (several streams feed it)."""
    db = database_url.rsplit("/", 1)[1]
    return int(pg.psql("SELECT count(DISTINCT (stream, stream_id)) FROM stream_products", db) or 0)


def cli(*args: str, redis_url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCALE_")}
    env["STREAMSCALE_REDIS_URL"] = redis_url
    return subprocess.run(
        [STREAMSCALE, *args],
        check=False, capture_output=True, text=True, env=env, timeout=timeout, cwd="/",
    )  # fmt: skip


def pending(client: redis.RedisCluster, stream: str) -> int:
    groups = client.xinfo_groups(stream)
    return int(next(g["pending"] for g in groups if g["name"].decode() == GROUP))


@pytest.mark.timeout(120)
def test_consumer_on_cluster_stores_dead_letters_claims_and_leaves(
    cluster: LocalCluster, client: redis.RedisCluster, tagged: Callable[[str], str],
    database_url: str, postgres_server: PostgresServer,
) -> None:  # fmt: skip
    stream = tagged("orders")
    dlq = stream + ":dlq"
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ids = produce(client, stream, [product(n) for n in range(300)] + [b"{poison"])
    # Stranded on a gone consumer: 3 delivered too often (the claim path dead-letters them),
    # one deleted while pending (recorded as `deleted`).
    client.xreadgroup(GROUP, "ghost", {stream: ">"}, count=10)
    for _ in range(3):
        client.xclaim(stream, GROUP, "ghost", 0, ids[:3])
    client.xdel(stream, ids[9])
    consumer = ConsumerProcess(
        redis_url=cluster.url, database_url=database_url, stream=stream, group=GROUP,
        model=MODEL, consumer="pod-1", claim_idle_ms=200, max_deliveries=3, batch_size=50,
    ).start()  # fmt: skip
    try:
        wait_until(lambda: pending(client, stream) == 0 and client.xlen(dlq) == 5, 60, 0.2,
                   "the group to drain")  # fmt: skip
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    letters = {d["x-original-id"]: d["x-reason"] for d in dead_letters(client, dlq)}
    assert letters == {
        **dict.fromkeys(ids[:3], "max-deliveries"), ids[9]: "deleted", ids[-1]: "invalid"
    }  # fmt: skip
    assert sorted(table_ids(postgres_server, database_url)) == sorted(set(ids) - set(letters))
    names = {c["name"].decode() for c in client.xinfo_consumers(stream, GROUP)}
    assert names == {"ghost"}, "the consumer left the group on SIGTERM"
    assert "CROSSSLOT" not in consumer.output() and "Traceback" not in consumer.output()


@pytest.mark.timeout(60)
def test_consumer_refuses_names_in_two_hash_slots_naming_the_ones_to_use(
    cluster: LocalCluster, database_url: str
) -> None:
    stream = f"orders-{uuid.uuid4().hex[:8]}"
    consumer = ConsumerProcess(
        redis_url=cluster.url, database_url=database_url, stream=stream, group=GROUP, model=MODEL
    ).start(wait_ready=False)
    try:
        assert consumer.wait(30) == 2
    finally:
        consumer.kill()
    out = consumer.output()
    assert f"'{{{stream}}}'" in out and f"'{{{stream}}}:dlq'" in out, out
    assert "CROSSSLOT" in out and "Traceback" not in out, out
    # A dead-letter stream set apart from the stream's tag is refused the same way.
    consumer = ConsumerProcess(
        redis_url=cluster.url, database_url=database_url, stream="{" + stream + "}",
        dead_letter_stream="dead-letters", group=GROUP, model=MODEL,
    ).start(wait_ready=False)  # fmt: skip
    try:
        assert consumer.wait(30) == 2
    finally:
        consumer.kill()
    assert f"dead-letter stream '{{{stream}}}:dlq'" in consumer.output(), consumer.output()


@pytest.mark.timeout(120)
async def test_a_stream_sharded_over_the_cluster_is_produced_and_consumed_once_each(
    cluster: LocalCluster, client: redis.RedisCluster, postgres_server: PostgresServer,
    database_url: str,
) -> None:  # fmt: skip
    """Six shards spread over the three masters; one consumer reads every shard (one loop per
    slot, since a Cluster's XREADGROUP stays within one slot) and stores each entry once."""
    logical = f"orders-{uuid.uuid4().hex[:8]}"
    shards = shard_streams(logical, 6)
    assert len({cluster.master_of(s) for s in shards}) == 3, "spread over every master"
    out = cli("produce", "--stream", logical, "--shards", "6", "-c", "3000", "--mode", "bulk",
              "--key-field", "sku", "--json", "--no-progress", redis_url=cluster.url)  # fmt: skip
    assert out.returncode == 0, out.stderr
    by_shard = json.loads(out.stdout)["by_shard"]
    assert sum(by_shard.values()) == 3000 and set(by_shard) == set(shards)
    client.xadd(shards[4], {"data": b"not json"})
    consumer = ConsumerProcess(
        redis_url=cluster.url, database_url=database_url, stream=logical, shards=6,
        group=GROUP, model="tests.support.models:StreamProduct",
    ).start()  # fmt: skip
    try:
        wait_until(lambda: rows(postgres_server, database_url) >= 3000, 60, 0.3)
        wait_until(lambda: client.xlen(shards[4] + ":dlq") == 1, 15, 0.2, "the poison entry")
        wait_until(lambda: all(pending(client, s) == 0 for s in shards), 15, 0.2, "acked")
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    assert rows(postgres_server, database_url) == 3000
    out = cli("status", *[a for s in shards for a in ("--stream", s)], "--once", "--json",
              redis_url=cluster.url)  # fmt: skip
    (total,) = json.loads(out.stdout)["logical_streams"]
    assert total["stream"] == logical and total["shards"] == 6 and total["length"] == 3001
    assert total["groups"][0]["pending"] == 0 and total["dead_letter_length"] == 1


async def test_a_cluster_client_packs_with_hiredis_on_every_node(
    cluster: LocalCluster, tagged: Callable[[str], str]
) -> None:
    nodes = await connected_round_trip(cluster.url, tagged("orders"))
    assert len(nodes) >= 3, "the masters found in the slot map, not only a seed"


@pytest.mark.timeout(60)
async def test_operator_lag_and_mover_on_cluster_and_names_refused_as_degraded(
    cluster: LocalCluster, client: redis.RedisCluster, tagged: Callable[[str], str],
    kmock: kmock.KubernetesEmulator,
) -> None:  # fmt: skip
    stream = tagged("orders")
    dlq = stream + ":dlq"
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    produce(client, stream, [product(n) for n in range(100)])
    client.xreadgroup(GROUP, "gone-pod", {stream: ">"}, count=40)

    # The functions behind a poll, on a cluster client.
    aio = connect(cluster.url)
    try:
        obs = await observe(aio, stream, GROUP, estimate_limit=1000)
        assert (obs.lag, obs.pending, len(obs.consumers)) == (60, 40, 1)
        time.sleep(0.3)
        result = await reclaim(
            Scripts(aio), stream, GROUP, dlq, consumers=list(obs.consumers), pods=set(),
            rules=Rules(max_deliveries=5, idle_ms=60_000, min_idle_ms=0, gone_idle_ms=0),
            counter=counter_key(dlq, stream, GROUP),
        )  # fmt: skip
        assert result.dead_lettered == {"idle": 40} and result.removed == ["gone-pod"]
        assert await read_counts(aio, counter_key(dlq, stream, GROUP)) == {"idle": 40}
    finally:
        await aio.aclose()
    assert client.xlen(dlq) == 40

    # The operator itself: Ready with the lag for tagged names, Degraded for the others.
    untagged = stream.strip("{}")
    h.declare_resources(kmock)
    common = {
        "group": GROUP, "database": h.DATABASE, "consumer": {"image": "streamscale:test"},
        "scaling": {"maxReplicas": 2, "pollSeconds": 0.2},
    }  # fmt: skip
    kmock.objects[h.STC, h.NAMESPACE, "tagged"] = h.stream_consumer(
        "tagged", {**common, "stream": stream}
    )
    kmock.objects[h.STC, h.NAMESPACE, "untagged"] = h.stream_consumer(
        "untagged", {**common, "stream": untagged}
    )
    async with h.running_operator(kmock, h.settings(cluster.url)):
        await h.eventually(lambda: h.condition(kmock, "tagged", "Ready") == "True", 20)
        assert h.status(kmock, "tagged")["lag"] == 60
        await h.eventually(lambda: h.condition(kmock, "untagged", "Degraded") == "True", 20)
    message = next(
        c["message"] for c in h.status(kmock, "untagged")["conditions"] if c["type"] == "Degraded"
    )
    assert f"'{{{untagged}}}'" in message and f"'{{{untagged}}}:dlq'" in message, message
    assert "HashSlotMismatch" in {e.get("reason") for e in h.events(kmock)}


@pytest.mark.timeout(90)
def test_produce_status_and_dlq_replay_and_purge_on_cluster(
    cluster: LocalCluster, client: redis.RedisCluster, tagged: Callable[[str], str]
) -> None:
    stream = tagged("orders")
    dlq = stream + ":dlq"
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for mode in ("stream", "bulk"):  # one XADD per round trip, then pipelined
        made = cli("produce", "--stream", stream, "--count", "5", "--mode", mode,
                   "--no-progress", redis_url=cluster.url)  # fmt: skip
        assert made.returncode == 0, made.stderr
    client.xreadgroup(GROUP, "worker", {stream: ">"}, count=3)
    for n in range(2):
        client.xadd(dlq, {"data": json.dumps(product(n)), "x-stream": stream, "x-reason": "idle",
                          "x-original-id": f"1-{n}"})  # fmt: skip

    status = cli("status", "--once", "--json", "--stream", stream, "--interval", "0",
                 redis_url=cluster.url)  # fmt: skip
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)["streams"]
    assert (row["length"], row["dead_letter_length"]) == (10, 2)
    [group] = row["groups"]
    assert (group["lag"], group["pending"]) == (7, 3)
    # Without --stream, status finds the streams on every master.
    listing = cli("status", "--once", "--json", "--interval", "0", redis_url=cluster.url)
    assert listing.returncode == 0, listing.stderr
    assert stream in {r["stream"] for r in json.loads(listing.stdout)["streams"]}

    replay = cli("dlq", "replay", "--all", "--stream", stream, redis_url=cluster.url)
    assert replay.returncode == 0 and "replayed 2 of 2" in replay.stdout, replay.stderr
    assert (client.xlen(stream), client.xlen(dlq)) == (12, 0)
    # Into a stream of another slot: refused with the reason, nothing moves.
    client.xadd(dlq, {"data": "{}", "x-stream": stream, "x-reason": "idle"})
    other = cli("dlq", "replay", "--all", "--stream", stream, "--to", "elsewhere",
                redis_url=cluster.url)  # fmt: skip
    assert other.returncode == 2 and "hash slot" in other.stderr, other.stderr
    assert client.xlen(dlq) == 1
    purge = cli("dlq", "purge", "--all", "--yes", "--stream", stream, redis_url=cluster.url)
    assert purge.returncode == 0 and "purged 1 entries" in purge.stdout, purge.stderr
    assert client.xlen(dlq) == 0


def stored_total(consumer: ConsumerProcess) -> float:
    """The consumer's `streamscale_messages_total{outcome="stored"}`: rows written, repeats too."""
    status, text = consumer.get("/metrics")
    assert status == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "streamscale_messages_total" and sample.labels["outcome"] == "stored"
    )


def assert_each_entry_once(
    client: redis.Redis | redis.RedisCluster, stream: str, producer: FlowingProducer,
    pg: PostgresServer, database_url: str,
) -> tuple[int, int, int]:  # fmt: skip
    """Every entry of the stream is in exactly one of {table, dead-letter stream}, once, and no
    write the producer saw confirmed is missing; (entries, rows, consumed then undone).

    Rows or dead letters of entries no longer in the stream are writes the failover undid
    after a consumer had read them (asynchronous replication): only writes no replica had
    confirmed (or whose reply was lost) may be among them.
    """
    entries = stream_entries(client, stream)
    missing = set(producer.confirmed) - set(entries)
    assert not missing, f"{len(missing)} confirmed writes lost, e.g. {sorted(missing)[:5]}"
    rows = table_ids(pg, database_url)
    letters = dead_letters(client, stream + ":dlq")
    undone = (set(rows) | {d.get("x-original-id", "") for d in letters}) - set(entries)
    assert not undone & set(producer.confirmed)
    assert len(undone) <= len(producer.unconfirmed) + producer.failed_writes, sorted(undone)
    poison = {i for i, bad in entries.items() if bad}
    poison |= {d.get("x-original-id", "") for d in letters} & undone
    verdict = check_invariant([*entries, *sorted(undone)], poison, rows, letters)
    assert verdict.ok, verdict.table("invariant")
    assert len(entries) >= producer.total
    return len(entries), len(rows), len(undone)


def drained(client: redis.Redis | redis.RedisCluster, stream: str, pg: PostgresServer,
            database_url: str) -> bool:  # fmt: skip
    info = next(g for g in client.xinfo_groups(stream) if g["name"].decode() == GROUP)
    if info["pending"] or info.get("lag"):
        return False
    done = len(table_ids(pg, database_url)) + client.xlen(stream + ":dlq")
    return done >= client.xlen(stream)


def consume_through(
    cluster: LocalCluster, client: redis.RedisCluster, stream: str, postgres_server: PostgresServer,
    database_url: str, disrupt: Callable[[], None], what: str,
) -> tuple[FlowingProducer, int, int, float]:  # fmt: skip
    """One consumer stores 2,000 entries flowing at 800/s while `disrupt` runs halfway; it must
    ride through, still ready once the group drained. (producer, entries, rows, stored)."""
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    consumer = ConsumerProcess(
        redis_url=cluster.url, database_url=database_url, stream=stream, **FAILOVER_CONSUMER
    ).start()
    producer = FlowingProducer(cluster.client, stream, total=2000, rate=800)
    try:
        producer.start()
        wait_until(lambda: len(producer.confirmed) >= 1000, 30, what="1000 entries produced")
        disrupt()
        assert producer.done.wait(60) and producer.error is None, producer.error
        wait_until(lambda: drained(client, stream, postgres_server, database_url), 60, 0.3,
                   f"the group to drain after the {what}")  # fmt: skip
        assert consumer.proc is not None and consumer.proc.poll() is None, consumer.output()
        assert consumer.get("/readyz")[0] == 200
        stored = stored_total(consumer)
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    entries, rows, _ = assert_each_entry_once(
        client, stream, producer, postgres_server, database_url
    )
    out = consumer.output()
    assert "Traceback" not in out and "is missing" not in out, out[-5000:]
    return producer, entries, rows, stored


@pytest.mark.timeout(180)
def test_cluster_failover_of_the_streams_master_while_messages_flow(
    cluster: LocalCluster, client: redis.RedisCluster, tagged: Callable[[str], str],
    database_url: str, postgres_server: PostgresServer,
) -> None:  # fmt: skip
    """CLUSTER FAILOVER on the replica of the stream's master, mid-run: nothing is lost or
    doubled; what the switch costs is redeliveries, which the idempotent write absorbs."""
    stream = tagged("orders")
    moved: list[int] = []

    def failover() -> None:
        old, new = cluster.failover(stream)
        assert cluster.master_of(stream) == new != old
        moved.extend((old, new))

    producer, entries, rows, stored = consume_through(
        cluster, client, stream, postgres_server, database_url, failover, "failover"
    )
    redeliveries = int(stored) - rows
    print(
        f"\ncluster failover {moved[0]} -> {moved[1]}: {entries} entries"
        f" ({producer.failed_writes} writes retried by the producer), {rows} rows,"
        f" {redeliveries} redeliveries absorbed"
    )
    assert redeliveries >= 0


@pytest.mark.slow  # 15 s; `make failover` runs it with the other failover tests
@pytest.mark.timeout(180)
def test_slot_migration_of_the_stream_while_consuming_crashes_nothing(
    cluster: LocalCluster, client: redis.RedisCluster, tagged: Callable[[str], str],
    database_url: str, postgres_server: PostgresServer,
) -> None:  # fmt: skip
    """The stream's slot moves to another master mid-run (MIGRATING/IMPORTING, MIGRATE, then
    SETSLOT NODE): clients meet ASK, TRYAGAIN and MOVED; the consumer keeps going."""
    stream = tagged("orders")
    moved: list[int] = []

    def migrate() -> None:
        source, target = cluster.reshard_slot_of(stream)
        assert cluster.master_of(stream) == target != source
        moved.extend((source, target))

    _, entries, rows, _ = consume_through(
        cluster, client, stream, postgres_server, database_url, migrate, "migration"
    )
    print(f"\nslot moved {moved[0]} -> {moved[1]}: {entries} entries, {rows} rows")


@pytest.mark.timeout(60)
def test_refused_credentials_on_cluster_exit_2_and_never_show_the_password(
    cluster: LocalCluster, database_url: str
) -> None:
    """redis-py wraps the refusal in "Redis Cluster cannot be connected": still a config error
    (exit 2), not a Redis to wait for."""
    secret = "right-" + uuid.uuid4().hex
    for port in cluster.ports:
        node = redis.Redis(host="127.0.0.1", port=port)
        node.acl_setuser("app", enabled=True, passwords=[f"+{secret}"], keys=["*"],
                         commands=["+@all"])  # fmt: skip
        node.close()
    wrong = "wrong-" + uuid.uuid4().hex
    url = cluster.url.replace("redis+cluster://", f"redis+cluster://app:{wrong}@")
    consumer = ConsumerProcess(
        redis_url=url, database_url=database_url, stream="{orders}", group=GROUP, model=MODEL
    ).start(wait_ready=False)
    try:
        assert consumer.wait(30) == 2
    finally:
        consumer.kill()
    out = consumer.output()
    assert "refused the credentials" in out and wrong not in out, out
    status = cli("status", "--once", "--interval", "0", redis_url=url)
    assert status.returncode == 1 and "refused the credentials" in status.stderr, status.stderr
    assert wrong not in status.stderr + status.stdout
    good = cli("status", "--once", "--interval", "0", redis_url=url.replace(wrong, secret))
    assert good.returncode == 0, good.stderr


@pytest.mark.timeout(90)
async def test_a_url_of_the_wrong_kind_exits_2_naming_the_kind_to_use(
    cluster: LocalCluster, client: redis.RedisCluster, redis_server: RedisServer,
    database_url: str, postgres_server: PostgresServer, tagged: Callable[[str], str],
) -> None:  # fmt: skip
    """A plain URL at a Cluster node (redirected, MOVED) and a Cluster URL at a plain server
    (no slot map) are settings to change, not a Redis to wait for: the consumer and the CLI
    exit 2 naming the URL to use, and the operator reports Redis refusing, not unreachable."""
    stream = next(
        name for name in (tagged(f"orders{n}") for n in range(100))
        if client.get_node_from_key(name).port != cluster.ports[0]
    )  # fmt: skip
    plain_at_node = f"redis://127.0.0.1:{cluster.ports[0]}/0"
    cluster_at_plain = redis_server.url.replace("redis://", "redis+cluster://").rsplit("/", 1)[0]
    await wrong_kind_refused(plain_at_node, "redis+cluster://", stream, database_url)
    await wrong_kind_refused(cluster_at_plain, "not a Redis Cluster", stream, database_url)
    # A plain URL at the node that serves the stream works, until the slot moves elsewhere.
    owner = f"redis://127.0.0.1:{cluster.master_of(stream)}/0"
    consumer = ConsumerProcess(
        redis_url=owner, database_url=database_url, stream=stream, group=GROUP, model=MODEL,
        block_ms=200,
    ).start()  # fmt: skip
    try:
        produce(client, stream, [product(n) for n in range(10)])
        wait_until(lambda: len(table_ids(postgres_server, database_url)) == 10, 30, what="rows")
        cluster.reshard_slot_of(stream)
        assert consumer.wait(30) == 2, consumer.output()
    finally:
        consumer.kill()
    assert "does not fit the server" in consumer.output(), consumer.output()
    assert "redis+cluster://" in consumer.output() and "Traceback" not in consumer.output()


async def wrong_kind_refused(url: str, advice: str, stream: str, database_url: str) -> None:
    """`url` names another kind of Redis than the server: the consumer and the CLI exit 2 with
    `advice`, and the operator's poll reports Redis refusing, with `advice` too."""
    consumer = ConsumerProcess(
        redis_url=url, database_url=database_url, stream=stream, group=GROUP, model=MODEL
    ).start(wait_ready=False)
    try:
        assert consumer.wait(30) == 2, consumer.output()
    finally:
        consumer.kill()
    assert "STREAMSCALE_REDIS_URL does not fit the server" in consumer.output()
    assert advice in consumer.output(), consumer.output()
    status = cli("status", "--once", "--interval", "0", "--stream", stream, redis_url=url)
    assert status.returncode == 2 and advice in status.stderr, status.stderr
    failure = classify(await first_error(url, stream))
    assert failure.reason == "RedisRefused" and advice in failure.message, failure


async def first_error(url: str, stream: str) -> BaseException:
    """What `XINFO GROUPS stream` raises through a client for `url`."""
    client = connect(url)
    try:
        await client.xinfo_groups(stream)
    except Exception as exc:
        return exc
    finally:
        await client.aclose()
    raise AssertionError(f"XINFO GROUPS through {url} did not fail")
