"""One consumer, several streams (`STREAMSCALE_STREAM=a,b,c`): real redis-server and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from streamscale.core.shards import shard_stream, shard_streams
from tests.consumer.test_consumer import count_rows, dead_letters, metric_value, settings
from tests.support.consumers import ConsumerProcess, product, wait_until
from tests.support.servers import PostgresServer, RedisServer


def produce_same_ids(client: redis.Redis, streams: list[str], count: int) -> list[str]:
    """`count` products into each stream under the same explicit IDs (1-1, 1-2, ...)."""
    ids = [f"1-{n + 1}" for n in range(count)]
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        for n, entry_id in enumerate(ids):
            pipe.xadd(stream, {"data": json.dumps(product(n))}, id=entry_id)
    pipe.execute()
    return ids


@pytest.mark.timeout(120)
def test_three_streams_with_the_same_ids_all_arrive_each_with_its_own_dead_letters(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    streams = [names("orders"), names("payments"), names("refunds")]
    ids = produce_same_ids(client, streams, 2000)
    for stream in streams:
        client.xadd(stream, {"data": b"not json"}, id="2-1")
    consumer = ConsumerProcess(
        redis_url=redis_server.url, database_url=database_url, stream=",".join(streams),
        group="writers", batch_size=300,
    ).start()  # fmt: skip
    try:
        wait_until(
            lambda: count_rows(postgres_server, database_url, "stream_events") == 3 * len(ids),
            60, 0.3, "every stream's rows",
        )  # fmt: skip
        wait_until(lambda: all(client.xlen(s + ":dlq") == 1 for s in streams), 15, 0.2, "dlq")
        page = consumer.get("/metrics")[1]
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    db = database_url.rsplit("/", 1)[1]
    for stream in streams:
        rows = postgres_server.psql(
            f"SELECT count(DISTINCT stream_id) FROM stream_events WHERE stream = '{stream}'", db
        )
        assert int(rows) == len(ids), stream
        assert list(dead_letters(client, stream)) == ["2-1"]
        assert dead_letters(client, stream)["2-1"]["x-stream"] == stream
        stored = metric_value(page, "streamscale_messages_total", stream=stream, outcome="stored")
        assert stored == len(ids)
        info = client.xinfo_groups(stream)[0]
        assert info["pending"] == 0 and info["lag"] == 0
    assert "Traceback" not in consumer.output()


@pytest.mark.timeout(120)
def test_a_model_keyed_on_stream_and_id_takes_several_streams_one_keyed_on_id_alone_is_refused(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    streams = [names("shop-a"), names("shop-b")]
    ids = produce_same_ids(client, streams, 500)
    refused = ConsumerProcess(**settings(redis_server.url, database_url, ",".join(streams)))
    refused.start(wait_ready=False)
    assert refused.wait(30) == 2
    out = refused.output()
    assert "identity is `stream_id` alone" in out and "stream: str = Field(primary_key=True)" in out
    assert "Traceback" not in out
    assert all(g["entries-read"] in (0, None) for s in streams for g in client.xinfo_groups(s))

    consumer = ConsumerProcess(
        **settings(redis_server.url, database_url, ",".join(streams),
                   model="tests.support.models:StreamProduct")
    ).start()  # fmt: skip
    try:
        wait_until(
            lambda: count_rows(postgres_server, database_url, "stream_products") == 2 * len(ids),
            60, 0.3, "rows of both streams",
        )  # fmt: skip
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    db = database_url.rsplit("/", 1)[1]
    per_stream = postgres_server.psql(
        "SELECT stream, count(*) FROM stream_products GROUP BY stream ORDER BY stream", db
    )
    assert per_stream.split() == [f"{s}|{len(ids)}" for s in sorted(streams)]


@pytest.mark.timeout(120)
def test_a_group_destroyed_on_one_stream_stops_that_stream_only(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    kept, lost = names("kept"), names("lost")
    produce_same_ids(client, [kept, lost], 100)
    consumer = ConsumerProcess(
        redis_url=redis_server.url, database_url=database_url, stream=f"{kept},{lost}",
        group="writers",
    ).start()  # fmt: skip
    try:
        wait_until(lambda: count_rows(postgres_server, database_url, "stream_events") == 200, 30)
        client.xgroup_destroy(lost, "writers")
        for n in range(100, 150):
            client.xadd(kept, {"data": json.dumps(product(n))})
            client.xadd(lost, {"data": json.dumps(product(n))})
        wait_until(lambda: consumer.get("/readyz")[0] != 200, 15, what="not ready")
        body = consumer.get("/readyz")[1]
        assert f"missing on stream '{lost}'" in body and kept not in body
        # The other stream goes on.
        wait_until(lambda: count_rows(postgres_server, database_url, "stream_events") == 250, 30)
        assert client.xinfo_groups(lost) == [], "never recreated at 0 (a replay)"
        page = consumer.get("/metrics")[1]
        assert metric_value(page, "streamscale_group_missing", stream=lost) == 1
        assert metric_value(page, "streamscale_group_missing", stream=kept) == 0
        # Put back where it was: the lost stream resumes, nothing replayed.
        client.xgroup_create(lost, "writers", id="1-100")
        wait_until(lambda: count_rows(postgres_server, database_url, "stream_events") == 300, 30)
        wait_until(consumer.ready, 15)
        assert consumer.terminate() == 0
    finally:
        consumer.kill()


def test_several_streams_with_one_dead_letter_stream_are_refused(
    redis_server: RedisServer, database_url: str
) -> None:
    consumer = ConsumerProcess(
        redis_url=redis_server.url, database_url=database_url, stream="a,b",
        dead_letter_stream="all:dlq",
    )  # fmt: skip
    consumer.start(wait_ready=False)
    assert consumer.wait(30) == 2
    assert "each stream then has its own `<stream>:dlq`" in consumer.output()


@pytest.mark.timeout(120)
def test_a_sharded_stream_is_consumed_from_every_shard(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    client: redis.Redis, names: Callable[[str], str],
) -> None:  # fmt: skip
    logical = names("orders")
    shards = shard_streams(logical, 4)
    for n in range(1000):
        key = f"customer-{n % 37}"
        client.xadd(shard_stream(logical, key, 4), {"data": json.dumps({"key": key, "n": n})})
    client.xadd(shards[2], {"data": b"not json"})
    consumer = ConsumerProcess(
        redis_url=redis_server.url, database_url=database_url, stream=logical, shards=4,
        group="writers",
    ).start()  # fmt: skip
    try:
        wait_until(
            lambda: count_rows(postgres_server, database_url, "stream_events") == 1000, 60, 0.3
        )
        wait_until(lambda: client.xlen(shards[2] + ":dlq") == 1, 15, 0.2, "the poison message")
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    db = database_url.rsplit("/", 1)[1]
    rows = postgres_server.psql(
        "SELECT stream, payload->>'key' FROM stream_events ORDER BY 1", db
    ).split()
    placed = [row.split("|") for row in rows]
    assert {stream for stream, _key in placed} == set(shards)
    assert all(stream == shard_stream(logical, key, 4) for stream, key in placed)
    assert all(client.xinfo_groups(s)[0]["pending"] == 0 for s in shards)
    assert not client.exists(logical)
