"""The consumer end to end: real redis-server, real PostgreSQL, real consumer processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.support.consumers import ConsumerProcess, produce, product, wait_until
from tests.support.servers import PostgresServer, RedisServer


def count_rows(pg: PostgresServer, url: str, table: str) -> int:
    return int(pg.psql(f"SELECT count(*) FROM {table}", database=url.rsplit("/", 1)[1]))


def table_exists(pg: PostgresServer, url: str, table: str) -> bool:
    db = url.rsplit("/", 1)[1]
    return pg.psql(f"SELECT to_regclass('{table}') IS NOT NULL", database=db) == "t"


def dead_letters(client: redis.Redis, stream: str) -> dict[str, dict[str, str]]:
    """Dead-letter entries keyed by x-original-id, fields decoded."""
    out = {}
    for _id, fields in client.xrange(stream + ":dlq"):
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        out[decoded["x-original-id"]] = decoded
    return out


def sample(text: str, outcome: str) -> float | None:
    """The value of streamscale_messages_total{outcome=...} in a /metrics page."""
    return metric_value(text, "streamscale_messages_total", outcome=outcome)


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels`, in a /metrics page."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def settings(redis_url: str, database_url: str, stream: str, **extra: object) -> dict[str, object]:
    return {
        "redis_url": redis_url,
        "database_url": database_url,
        "stream": stream,
        "group": "writers",
        "model": "tests.support.models:Product",
        **extra,
    }


@pytest.mark.timeout(180)
def test_50000_messages_become_exactly_50000_rows(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("products")
    ids = produce(client, stream, (product(n) for n in range(50_000)))
    consumer = ConsumerProcess(**settings(redis_server.url, database_url, stream)).start()
    try:
        wait_until(
            lambda: count_rows(postgres_server, database_url, "products") >= 50_000, 120, 0.5,
            "50,000 rows",
        )  # fmt: skip
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    db = database_url.rsplit("/", 1)[1]
    assert postgres_server.psql("SELECT count(*), count(DISTINCT stream_id) FROM products", db) == (
        "50000|50000"
    )
    assert postgres_server.psql("SELECT min(stream_id), max(stream_id) FROM products", db) == (
        f"{min(ids)}|{max(ids)}"
    )
    info = client.xinfo_groups(stream)[0]
    assert info["pending"] == 0 and info["consumers"] == 0
    assert client.xlen(stream + ":dlq") == 0


@pytest.mark.timeout(180)
def test_sigkill_mid_batch_then_restart_loses_nothing_and_duplicates_nothing(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("products")
    produce(client, stream, (product(n) for n in range(30_000)))
    config = settings(redis_server.url, database_url, stream, consumer="pod-a", batch_size=200)
    for _ in range(3):
        consumer = ConsumerProcess(**config).start()
        wait_until(
            lambda: client.xinfo_groups(stream)[0]["pending"] > 0, 30, 0.005, "a batch in flight"
        )
        consumer.kill()
        if count_rows(postgres_server, database_url, "products") >= 30_000:
            break
    # Killed with entries delivered but unacked: they are pending on pod-a and were maybe stored.
    consumer = ConsumerProcess(**config).start()
    try:
        wait_until(
            lambda: client.xinfo_groups(stream)[0]["entries-read"] == 30_000
            and client.xinfo_groups(stream)[0]["pending"] == 0,
            120, 0.5, "every entry read and acked",
        )  # fmt: skip
    finally:
        consumer.kill()
    db = database_url.rsplit("/", 1)[1]
    assert postgres_server.psql("SELECT count(*), count(DISTINCT stream_id) FROM products", db) == (
        "30000|30000"
    )
    assert client.xlen(stream + ":dlq") == 0


@pytest.mark.timeout(120)
def test_poison_messages_are_dead_lettered_with_reasons_and_the_rest_commits(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("checked")
    good = {"sku": "A", "name": "fine", "price": "1.50", "created_at": "2025-04-22T10:00:00Z"}
    cases: list[tuple[dict[str, object] | bytes, str | None]] = [
        (good, None),
        (b"{not json", "not JSON"),
        (b"[1, 2, 3]", "expected an object"),
        ({**good, "price": "cheap"}, "price"),
        ({"sku": "B", "name": "no price", "created_at": "2025-04-22T10:00:00Z"}, "price"),
        ({**good, "created_at": "yesterday"}, "created_at"),
        ({**good, "price": "-3.00"}, "price_not_negative"),  # only the database knows
        ({**good, "name": "forbidden"}, "name_allowed"),  # only the database knows
        ({**good, "name": "x" * 5000}, "bytes, above"),  # larger than max_message_bytes
        ({**good, "name": "naive time", "created_at": "2025-04-22T10:00:00"}, None),
    ]
    payloads = [case for case, _ in cases] * 30  # each poison sits in batches with good rows
    ids = produce(client, stream, payloads)
    expected_errors = {ids[i]: cases[i % len(cases)][1] for i in range(len(ids))}
    consumer = ConsumerProcess(
        **settings(redis_server.url, database_url, stream,
                   model="tests.support.models:CheckedProduct", max_message_bytes=2048,
                   batch_size=64)
    ).start()  # fmt: skip
    try:
        wait_until(
            lambda: client.xinfo_groups(stream)[0]["entries-read"] == len(ids)
            and client.xinfo_groups(stream)[0]["pending"] == 0,
            60, 0.2, "every entry handled",
        )  # fmt: skip
    finally:
        consumer.terminate()
    db = database_url.rsplit("/", 1)[1]
    stored = set(postgres_server.psql("SELECT stream_id FROM checked_products", db).split())
    dead = dead_letters(client, stream)
    assert stored == {i for i, err in expected_errors.items() if err is None}
    assert set(dead) == {i for i, err in expected_errors.items() if err is not None}
    for entry_id, letter in dead.items():
        assert letter["x-reason"] == "invalid"
        assert expected_errors[entry_id] in letter["x-error"], letter
        assert letter["x-stream"] == stream and letter["x-group"] == "writers"
        assert letter["x-deliveries"] == "1" and letter["x-dead-lettered-at"]
    # The original fields travel with the dead letter, for inspection and replay.
    sample = next(i for i, err in expected_errors.items() if err == "not JSON")
    assert dead[sample]["data"] == "{not json"


@pytest.mark.timeout(120)
def test_postgres_down_mid_run_every_row_arrives_and_nothing_is_dead_lettered(
    redis_server: RedisServer, fresh_postgres: PostgresServer, client: redis.Redis,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("products")
    url = fresh_postgres.url("postgres")
    produce(client, stream, (product(n) for n in range(2000)))
    consumer = ConsumerProcess(
        **settings(redis_server.url, url, stream, claim_idle_ms=1000, max_deliveries=2)
    ).start()
    try:
        wait_until(lambda: count_rows(fresh_postgres, url, "products") == 2000, 30, 0.2, "rows")
        fresh_postgres.stop()
        produce(client, stream, (product(n) for n in range(2000, 6000)))
        # Down for several claim-idle periods: the consumer must neither give up nor let its
        # entries be claimed until their delivery count dead-letters them.
        time.sleep(5)
        assert consumer.get("/readyz")[0] == 503
        assert consumer.get("/healthz")[0] == 200
        fresh_postgres.start()
        wait_until(lambda: count_rows(fresh_postgres, url, "products") == 6000, 60, 0.5, "rows")
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    assert fresh_postgres.psql("SELECT count(DISTINCT stream_id) FROM products") == "6000"
    assert client.xlen(stream + ":dlq") == 0
    assert "database unavailable" in consumer.output()
    assert consumer.output().count("database unavailable") <= 3  # one line per state change


@pytest.mark.timeout(120)
def test_redis_restarted_empty_group_is_recreated_and_consuming_goes_on(
    fresh_redis: RedisServer, postgres_server: PostgresServer, database_url: str,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("products")
    client = redis.Redis.from_url(fresh_redis.url)
    produce(client, stream, (product(n) for n in range(500)))
    consumer = ConsumerProcess(**settings(fresh_redis.url, database_url, stream)).start()
    try:
        wait_until(lambda: count_rows(postgres_server, database_url, "products") == 500, 30)
        fresh_redis.restart(empty=True)
        time.sleep(1.0)
        client = redis.Redis.from_url(fresh_redis.url)
        wait_until(lambda: client.exists(stream), 30, 0.2, "the group to be recreated")
        produce(client, stream, (product(n) for n in range(500, 800)))
        wait_until(lambda: count_rows(postgres_server, database_url, "products") == 800, 30)
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    assert "recreated it" in consumer.output()


@pytest.mark.timeout(60)
def test_sigterm_drains_in_flight_batch_and_leaves_the_group(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("products")
    produce(client, stream, (product(n) for n in range(20_000)))
    consumer = ConsumerProcess(
        **settings(redis_server.url, database_url, stream, consumer="pod-b", batch_size=1000)
    ).start()
    try:
        wait_until(lambda: client.xinfo_groups(stream)[0]["pending"] > 0, 30, 0.005, "in flight")
        assert consumer.proc is not None
        consumer.proc.send_signal(signal.SIGTERM)
        assert consumer.wait(30) == 0
    finally:
        consumer.kill()
    info = client.xinfo_groups(stream)[0]
    rows = count_rows(postgres_server, database_url, "products")
    assert info["pending"] == 0, "the in-flight batch was acked"
    assert info["consumers"] == 0, "the consumer left the group"
    assert rows == info["entries-read"] > 0, "everything read was stored"


@pytest.mark.timeout(60)
def test_stranded_entries_are_claimed_and_exhausted_ones_dead_lettered(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("products")
    client.xgroup_create(stream, "writers", id="0", mkstream=True)
    ids = produce(client, stream, (product(n) for n in range(30)))
    # A consumer that died holding entries: 10 delivered once, 10 delivered many times.
    client.xreadgroup("writers", "ghost", {stream: ">"}, count=20)
    for _ in range(5):
        client.xclaim(stream, "writers", "ghost", 0, ids[10:20])
    client.xdel(stream, ids[0])  # deleted while pending: XAUTOCLAIM reports it
    time.sleep(0.3)
    consumer = ConsumerProcess(
        **settings(redis_server.url, database_url, stream, claim_idle_ms=200, max_deliveries=3)
    ).start()
    try:
        wait_until(lambda: client.xinfo_groups(stream)[0]["pending"] == 0, 30, 0.2, "drained")
    finally:
        consumer.terminate()
    db = database_url.rsplit("/", 1)[1]
    stored = set(postgres_server.psql("SELECT stream_id FROM products", db).split())
    dead = dead_letters(client, stream)
    assert stored == set(ids[1:10]) | set(ids[20:])
    assert {i for i, d in dead.items() if d["x-reason"] == "max-deliveries"} == set(ids[10:20])
    assert {i for i, d in dead.items() if d["x-reason"] == "deleted"} == {ids[0]}
    assert all(json.loads(dead[i]["data"])["sku"] for i in ids[10:20])


def test_model_without_stream_id_is_refused_with_the_line_to_add(
    redis_server: RedisServer, database_url: str, names: Callable[[str], str]
) -> None:
    consumer = ConsumerProcess(
        **settings(
            redis_server.url, database_url, names("x"), model="tests.support.models:NoIdentity"
        )
    ).start(wait_ready=False)
    assert consumer.wait(30) == 2
    assert "stream_id: str = Field(unique=True, index=True)" in consumer.output()


def test_wrong_model_path_says_what_to_fix(
    redis_server: RedisServer, database_url: str, names: Callable[[str], str]
) -> None:
    consumer = ConsumerProcess(
        **settings(redis_server.url, database_url, names("x"), model="tests.nowhere:Model")
    ).start(wait_ready=False)
    assert consumer.wait(30) == 2
    assert "cannot import module 'tests.nowhere'" in consumer.output()
    assert "Traceback" not in consumer.output()


def test_metrics_endpoint_exports_the_design_names(
    redis_server: RedisServer, database_url: str, client: redis.Redis,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("products")
    produce(client, stream, [product(1), b"garbage"])
    consumer = ConsumerProcess(**settings(redis_server.url, database_url, stream)).start()
    try:
        wait_until(lambda: client.xlen(stream + ":dlq") == 1, 20)
        wait_until(lambda: sample(consumer.get("/metrics")[1], "stored") == 1.0, 20)
        status, text = consumer.get("/metrics")
    finally:
        consumer.terminate()
    assert status == 200
    for name in (
        "streamscale_messages_total", "streamscale_batch_seconds_bucket",
        "streamscale_sink_seconds_bucket", "streamscale_end_to_end_seconds_bucket",
        "streamscale_inflight_messages",
    ):  # fmt: skip
        assert name in text
    assert sample(text, "dead_lettered") == 1.0
    assert sample(text, "retried") == 0.0


@pytest.mark.timeout(60)
def test_own_pending_entries_delivered_too_often_are_dead_lettered_after_restart(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    """A message that crashes its consumer comes back after every restart: not for ever."""
    stream = names("products")
    client.xgroup_create(stream, "writers", id="0", mkstream=True)
    ids = produce(client, stream, (product(n) for n in range(10)))
    client.xreadgroup("writers", "pod-c", {stream: ">"}, count=10)
    for _ in range(4):  # as if pod-c had crashed on ids[:3] four more times
        client.xreadgroup("writers", "pod-c", {stream: "0"}, count=3)
    consumer = ConsumerProcess(
        **settings(
            redis_server.url,
            database_url,
            stream,
            consumer="pod-c",
            concurrency=1,
            max_deliveries=3,
        )
    ).start()
    try:
        wait_until(lambda: client.xinfo_groups(stream)[0]["pending"] == 0, 30, 0.2, "drained")
    finally:
        consumer.terminate()
    db = database_url.rsplit("/", 1)[1]
    assert set(postgres_server.psql("SELECT stream_id FROM products", db).split()) == set(ids[3:])
    dead = dead_letters(client, stream)
    assert set(dead) == set(ids[:3])
    assert {d["x-reason"] for d in dead.values()} == {"max-deliveries"}
    assert {d["x-consumer"] for d in dead.values()} == {"pod-c"}


@pytest.mark.timeout(60)
def test_a_value_too_long_for_its_column_is_dead_lettered_not_truncated(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("codes")
    ids = produce(client, stream, [{"code": "ok"}, {"code": "far-too-long"}, {"code": "12345678"}])
    consumer = ConsumerProcess(
        **settings(redis_server.url, database_url, stream, model="tests.support.models:ShortCode")
    ).start()
    try:
        wait_until(lambda: client.xinfo_groups(stream)[0]["pending"] == 0
                   and client.xinfo_groups(stream)[0]["entries-read"] == 3, 30, 0.2)  # fmt: skip
    finally:
        consumer.terminate()
    db = database_url.rsplit("/", 1)[1]
    rows = postgres_server.psql("SELECT stream_id, code FROM short_codes ORDER BY 1", db)
    assert rows.split() == [f"{ids[0]}|ok", f"{ids[2]}|12345678"]
    dead = dead_letters(client, stream)
    assert set(dead) == {ids[1]}
    assert "too long" in dead[ids[1]]["x-error"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_second_stream_into_a_table_another_stream_feeds_is_refused(
    backend: str, redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str], tmp_path,
) -> None:  # fmt: skip
    """Entry IDs are per stream: the second stream's rows would be dropped as duplicates."""
    url = database_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'two.db'}"
    first, second = names("orders-a"), names("orders-b")
    ids = produce(client, first, (product(n) for n in range(200)))
    produce(client, second, (product(n) for n in range(200)))
    feeder = ConsumerProcess(**settings(redis_server.url, url, first)).start()
    intruder = ConsumerProcess(**settings(redis_server.url, url, second))
    try:
        wait_until(lambda: client.xinfo_groups(first)[0]["entries-read"] == len(ids), 30)
        intruder.start(wait_ready=False)
        assert intruder.wait(30) == 2
        out = intruder.output()
        assert f"already fed by stream '{first}'" in out and "Traceback" not in out
        assert "DELETE FROM streamscale_table_streams WHERE table_name" in out
        # Nothing of the second stream was read, so nothing of it was acked and lost.
        assert all(g["entries-read"] in (0, None) for g in client.xinfo_groups(second))
        # A restart of the stream's own consumer is still welcome.
        assert feeder.terminate() == 0
        feeder = ConsumerProcess(**settings(redis_server.url, url, first)).start()
    finally:
        feeder.kill()
        intruder.kill()


@pytest.mark.timeout(120)
def test_a_destroyed_group_on_a_stream_with_entries_stops_consuming_instead_of_replaying(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("products")
    first = produce(client, stream, (product(n) for n in range(100)))
    consumer = ConsumerProcess(**settings(redis_server.url, database_url, stream)).start()
    try:
        wait_until(lambda: count_rows(postgres_server, database_url, "products") == 100, 30)
        client.xgroup_destroy(stream, "writers")
        later = produce(client, stream, (product(n) for n in range(100, 150)))
        wait_until(lambda: consumer.get("/readyz")[0] != 200, 15, what="not ready")
        _status, body = consumer.get("/readyz")
        assert "group 'writers' is missing" in body and "XGROUP DESTROY" in body
        assert metric_value(consumer.get("/metrics")[1], "streamscale_group_missing") == 1
        time.sleep(1.5)  # several read attempts: none may recreate the group at 0
        assert client.xinfo_groups(stream) == []
        assert consumer.output().count("Consuming is stopped") == 1
        # The operator (or a person) puts the group back where it was: consuming resumes.
        client.xgroup_create(stream, "writers", id=first[-1])
        wait_until(lambda: count_rows(postgres_server, database_url, "products") == 150, 30)
        wait_until(consumer.ready, 15)
        assert metric_value(consumer.get("/metrics")[1], "streamscale_group_missing") == 0
        # Each message stored once: the stream was not replayed from 0.
        assert sample(consumer.get("/metrics")[1], "stored") == len(first) + len(later)
        assert consumer.terminate() == 0
    finally:
        consumer.kill()


@pytest.mark.timeout(60)
def test_a_group_lost_with_its_stream_is_recreated(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    """Redis restarted empty (here: the stream deleted): nothing to replay, recreate at 0."""
    stream = names("products")
    produce(client, stream, (product(n) for n in range(10)))
    consumer = ConsumerProcess(**settings(redis_server.url, database_url, stream)).start()
    try:
        wait_until(lambda: count_rows(postgres_server, database_url, "products") == 10, 30)
        client.delete(stream)
        wait_until(lambda: client.exists(stream) and client.xinfo_groups(stream), 15)
        produce(client, stream, (product(n) for n in range(10, 20)))
        wait_until(lambda: count_rows(postgres_server, database_url, "products") == 20, 30)
        assert consumer.terminate() == 0
    finally:
        consumer.kill()


def run_sql(backend: str, pg: PostgresServer, url: str, sql: str) -> str:
    """Run `sql` in the database behind `url`, as an operator of that database would."""
    if backend == "postgresql":
        return pg.psql(sql, database=url.rsplit("/", 1)[1])
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
        return "\n".join("|".join(map(str, row)) for row in db.execute(sql))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_table_lacking_a_model_column_is_refused_with_the_alter_table_or_extended_on_request(
    backend: str, redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str], tmp_path,
) -> None:  # fmt: skip
    """An older `products` table without `url`: every INSERT would fail, for ever."""
    url = database_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'old.db'}"
    serial = "serial" if backend == "postgresql" else "integer"
    old_table = (
        f"CREATE TABLE products (id {serial} PRIMARY KEY, stream_id varchar UNIQUE, "
        "sku varchar(64), name varchar, price numeric(12, 2), created_at timestamp)"
    )
    run_sql(backend, postgres_server, url, old_table)
    stream = names("old-table")
    ids = produce(client, stream, (product(n) for n in range(50)))
    refused = ConsumerProcess(**settings(redis_server.url, url, stream)).start(wait_ready=False)
    assert refused.wait(30) == 2
    out = refused.output()
    assert "lacks the model's column(s) url" in out and "Traceback" not in out
    assert "ALTER TABLE products ADD COLUMN url VARCHAR;" in out
    assert all(g["entries-read"] in (0, None) for g in client.xinfo_groups(stream))

    consumer = ConsumerProcess(**settings(redis_server.url, url, stream,
                                          add_missing_columns="true")).start()  # fmt: skip
    try:
        count = "SELECT count(url) FROM products"
        wait_until(lambda: run_sql(backend, postgres_server, url, count) == str(len(ids)), 30)
    finally:
        assert consumer.terminate() == 0
    assert "added the missing column(s)" in consumer.output()
    assert client.xlen(stream + ":dlq") == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_column_dropped_under_a_running_consumer_stops_it_with_exit_2_and_loses_nothing(
    backend: str, redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str], tmp_path,
) -> None:  # fmt: skip
    """Retrying an INSERT into a column that is gone cannot succeed: not 'database unavailable'."""
    url = database_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'drop.db'}"
    stream = names("dropped")
    first = produce(client, stream, (product(n) for n in range(20)))
    consumer = ConsumerProcess(**settings(redis_server.url, url, stream)).start()
    try:
        count = "SELECT count(*) FROM products"
        wait_until(lambda: run_sql(backend, postgres_server, url, count) == str(len(first)), 30)
        run_sql(backend, postgres_server, url, "ALTER TABLE products DROP COLUMN url")
        later = produce(client, stream, (product(n) for n in range(20, 30)))
        assert consumer.wait(30) == 2
    finally:
        consumer.kill()
    out = consumer.output()
    assert "writing into table products failed" in out and "Traceback" not in out
    assert "ALTER TABLE" in out
    # Nothing of the later messages was acked or dead-lettered: they wait for the fix.
    (group,) = client.xinfo_groups(stream)
    assert group["entries-read"] - group["pending"] == len(first) < group["entries-read"]
    assert group["entries-read"] <= len(first) + len(later)
    assert client.xlen(stream + ":dlq") == 0


def postgres_processes(pg: PostgresServer) -> list[int]:
    """The postmaster and every backend: pausing the postmaster alone leaves sessions answering."""
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
    return [postmaster, *children]


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a short-lived backend already gone
            os.kill(pid, signum)


@pytest.mark.timeout(120)
def test_a_hung_database_is_reported_within_seconds_with_the_reason_in_readyz(
    redis_server: RedisServer, fresh_postgres: PostgresServer, client: redis.Redis,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("hung")
    url = fresh_postgres.url("postgres")
    produce(client, stream, (product(n) for n in range(100)))
    consumer = ConsumerProcess(**settings(redis_server.url, url, stream,
                                          database_timeout_seconds=2)).start()  # fmt: skip
    paused: list[int] = []
    try:
        wait_until(lambda: count_rows(fresh_postgres, url, "products") == 100, 30, 0.2, "rows")
        paused = postgres_processes(fresh_postgres)
        signal_all(paused, signal.SIGSTOP)
        produce(client, stream, (product(n) for n in range(100, 200)))
        wait_until(lambda: "did not answer within 2 s" in consumer.output(), 15, 0.2, "a log line")
        status, body = consumer.get("/readyz")
        # Within the kubelet's default 1 s probe timeout, with the reason.
        assert status == 503 and "PostgreSQL did not answer within 0.8 s" in body
        signal_all(paused, signal.SIGCONT)
        wait_until(lambda: count_rows(fresh_postgres, url, "products") == 200, 60, 0.5, "rows")
        assert consumer.terminate() == 0
    finally:
        signal_all(paused, signal.SIGCONT)
        consumer.kill()
    assert client.xlen(stream + ":dlq") == 0
    assert "Traceback" not in consumer.output()


def memory_kib(pid: int, field: str) -> int:
    """`VmRSS` (now) or `VmHWM` (peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.timeout(180)
def test_large_messages_are_read_within_the_byte_budget_so_memory_stays_bounded(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    """150 entries of 0.9 MB (each under the cap) used to be read, decoded and held at once."""
    stream = names("large")
    consumer = ConsumerProcess(
        redis_url=redis_server.url, database_url=database_url, stream=stream, group="writers",
        batch_max_bytes=8 * 1_048_576, concurrency=1,
    ).start()  # fmt: skip
    try:
        assert consumer.proc is not None
        baseline = memory_kib(consumer.proc.pid, "VmRSS")
        blob = "x" * 900_000
        ids = produce(client, stream, ({"n": n, "blob": blob} for n in range(150)), chunk=10)
        wait_until(lambda: count_rows(postgres_server, database_url, "stream_events") == len(ids),
                   90, 0.5, "rows")  # fmt: skip
        grown_mib = (memory_kib(consumer.proc.pid, "VmHWM") - baseline) / 1024
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
        client.delete(stream)
    # 8 MiB raw per read, a few copies while decoding and storing: far from 135 MB x copies.
    assert grown_mib < 100, f"peak RSS grew by {grown_mib:.0f} MiB"


@pytest.mark.timeout(120)
def test_a_pod_stopped_while_holding_entries_hands_them_back_at_once(
    redis_server: RedisServer, fresh_postgres: PostgresServer, client: redis.Redis,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    """Scale-in of a pod whose batch cannot finish (database hung): what it holds is claimable
    by the other pods at once, not after its claim idle time (here a minute)."""
    stream = names("handback")
    url = fresh_postgres.url("postgres")
    ids = produce(client, stream, (product(n) for n in range(50)))
    slow_claim = {"claim_idle_ms": 60_000, "database_timeout_seconds": 1}
    leaving = ConsumerProcess(**settings(redis_server.url, url, stream, consumer="leaving",
                                         concurrency=1, shutdown_grace_seconds=3,
                                         **slow_claim)).start()  # fmt: skip
    paused: list[int] = []
    try:
        wait_until(lambda: count_rows(fresh_postgres, url, "products") == 50, 30, 0.2, "rows")
        paused = postgres_processes(fresh_postgres)
        signal_all(paused, signal.SIGSTOP)
        later = produce(client, stream, (product(n) for n in range(50, 80)))
        wait_until(lambda: client.xinfo_groups(stream)[0]["pending"] > 0, 15, 0.1, "a batch")
        time.sleep(0.5)
        held = client.xpending_range(stream, "writers", "-", "+", 100)
        assert leaving.terminate() == 0
        signal_all(paused, signal.SIGCONT)
        paused = []
        pending = client.xpending_range(stream, "writers", "-", "+", 100)
        assert {p["message_id"] for p in pending} == {p["message_id"] for p in held}
        assert all(p["time_since_delivered"] >= 60_000 for p in pending), "handed back"
        assert all(p["times_delivered"] == 1 for p in pending), "no delivery counted"
        assert f"{len(held)} handed back" in leaving.output()
        staying = ConsumerProcess(**settings(redis_server.url, url, stream, consumer="staying",
                                             **slow_claim)).start()  # fmt: skip
        try:
            started = time.monotonic()
            wait_until(lambda: count_rows(fresh_postgres, url, "products") == 80, 20, 0.2)
            assert time.monotonic() - started < 20, "well before the 60 s claim idle time"
            assert staying.terminate() == 0
        finally:
            staying.kill()
    finally:
        signal_all(paused, signal.SIGCONT)
        leaving.kill()
    assert client.xlen(stream + ":dlq") == 0
    db_ids = set(fresh_postgres.psql("SELECT stream_id FROM products", "postgres").split())
    assert db_ids == set(ids) | set(later)


@pytest.mark.timeout(60)
def test_redis_credentials_revoked_after_a_good_start_stop_the_consumer_with_exit_2(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    stream = names("revoked")
    user = names("reader").replace("-", "")
    client.execute_command("ACL", "SETUSER", user, "on", ">first", "~*", "&*", "+@all")
    url = redis_server.url.replace("redis://", f"redis://{user}:first@")
    produce(client, stream, (product(n) for n in range(20)))
    consumer = ConsumerProcess(**settings(url, database_url, stream)).start()
    try:
        wait_until(lambda: count_rows(postgres_server, database_url, "products") == 20, 30)
        client.execute_command("ACL", "SETUSER", user, "resetpass", ">rotated")
        client.execute_command("CLIENT", "KILL", "USER", user)
        assert consumer.wait(30) == 2
    finally:
        consumer.kill()
        client.execute_command("ACL", "DELUSER", user)
    out = consumer.output()
    assert "Redis refused the credentials" in out and ":first@" not in out
    assert "Traceback" not in out
