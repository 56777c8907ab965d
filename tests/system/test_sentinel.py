"""streamscale behind Redis Sentinel: one master, one replica, three sentinels (real processes).

The master is SIGKILLed mid-run. The consumer and the operator reach Redis through a
`redis+sentinel://` URL and follow the promotion without a restart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import kmock
import pytest
import redis
import redis.sentinel

from tests.support import kube as h
from tests.support.clusters import FlowingProducer, LocalSentinels, running_sentinels
from tests.support.commands import connected_round_trip
from tests.support.consumers import ConsumerProcess, wait_until
from tests.support.servers import PostgresServer, RedisServer, free_port
from tests.system.test_cluster import (
    FAILOVER_CONSUMER,
    GROUP,
    MODEL,
    assert_each_entry_once,
    drained,
    stored_total,
    wrong_kind_refused,
)


@pytest.fixture
def sentinels() -> Iterator[LocalSentinels]:
    with running_sentinels() as value:
        yield value


def master_client(sentinels: LocalSentinels) -> redis.Redis:
    """A synchronous client of the current master, closed with its sentinel connections."""
    manager = redis.sentinel.Sentinel(
        [("127.0.0.1", port) for port in sentinels.sentinel_ports], socket_timeout=2
    )
    client = manager.master_for(sentinels.master_name, socket_timeout=2)
    close = client.close

    def close_all() -> None:
        close()
        for sentinel in manager.sentinels:
            sentinel.close()

    client.close = close_all  # type: ignore[method-assign]
    return client


@pytest.mark.timeout(180)
async def test_master_killed_mid_run_consumer_and_operator_follow_the_promotion(
    sentinels: LocalSentinels, database_url: str, postgres_server: PostgresServer,
    kmock: kmock.KubernetesEmulator,
) -> None:  # fmt: skip
    stream = "orders"
    await connected_round_trip(sentinels.url, "packed")  # the consumer's and operator's client
    client = master_client(sentinels)
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        consumer = ConsumerProcess(
            redis_url=sentinels.url,
            database_url=database_url,
            stream=stream,
            **FAILOVER_CONSUMER,
        )
        await asyncio.to_thread(consumer.start)
        h.declare_resources(kmock)
        # The consumer's pod: without it the mover would take its entries for a gone pod's.
        kmock.objects[h.PODS, h.NAMESPACE, "pod-1"] = h.pod("pod-1", "orders")
        kmock.objects[h.STC, h.NAMESPACE, "orders"] = h.stream_consumer(
            "orders",
            {
                "stream": stream, "group": GROUP, "redis": {"url": sentinels.url},
                "database": h.DATABASE, "consumer": {"image": "streamscale:test"},
                "scaling": {"maxReplicas": 2, "pollSeconds": 0.2},
            },
        )  # fmt: skip
        producer = FlowingProducer(
            lambda: master_client(sentinels), stream, total=2000, rate=800, wait_replicas=True
        )
        try:
            async with h.running_operator(kmock, h.settings(sentinels.url)):
                await h.eventually(lambda: h.condition(kmock, "orders", "Ready") == "True", 20)
                producer.start()
                await h.eventually(lambda: len(producer.confirmed) >= 1000, 30)
                old = sentinels.master_port()
                new = await asyncio.to_thread(sentinels.kill_master)
                await asyncio.to_thread(producer.done.wait, 60)
                assert producer.done.is_set() and producer.error is None, producer.error
                await h.eventually(
                    lambda: drained(client, stream, postgres_server, database_url), 60, 0.3
                )
                # The operator saw Redis go away, said so, and is Ready again on the new master.
                await h.eventually(lambda: h.condition(kmock, "orders", "Ready") == "True", 20)
                await h.eventually(lambda: h.status(kmock, "orders").get("lag") == 0, 20)
            stored = stored_total(consumer)
            assert await asyncio.to_thread(consumer.terminate) == 0
        finally:
            consumer.kill()
        unavailable = h.events(kmock, "RedisUnavailable")
        recovered = h.events(kmock, "Recovered")
        assert unavailable and recovered, [e.get("reason") for e in h.events(kmock)]
        entries, rows, undone = assert_each_entry_once(
            client, stream, producer, postgres_server, database_url
        )
    finally:
        client.close()
    redeliveries = int(stored) - rows
    print(
        f"\nsentinel: master {old} killed, {new} promoted; {entries} entries"
        f" ({producer.failed_writes} writes retried by the producer, {len(producer.unconfirmed)}"
        f" not confirmed by a replica), {rows} rows, {redeliveries} redeliveries absorbed,"
        f" {undone} entries consumed and then undone by the failover"
    )
    assert redeliveries >= 0
    out = consumer.output()
    assert "Traceback" not in out and "is missing" not in out, out[-5000:]


@pytest.mark.timeout(60)
def test_unreachable_sentinels_are_retried_and_no_password_is_logged(database_url: str) -> None:
    password, sentinel_password = "master-" + uuid.uuid4().hex, "sentinel-" + uuid.uuid4().hex
    hosts = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    url = f"redis+sentinel://app:{password}@{hosts}/streams/0?sentinel_password={sentinel_password}"
    consumer = ConsumerProcess(
        redis_url=url, database_url=database_url, stream="orders", group=GROUP, model=MODEL
    ).start(wait_ready=False)
    try:
        wait_until(lambda: "Redis unavailable" in consumer.output(), 20, what="a retry logged")
        assert consumer.proc is not None and consumer.proc.poll() is None, consumer.output()
        assert consumer.get("/readyz")[0] == 503
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    out = consumer.output()
    assert password not in out and sentinel_password not in out, out


@pytest.mark.timeout(90)
async def test_a_url_of_the_wrong_kind_exits_2_naming_the_kind_to_use(
    sentinels: LocalSentinels, redis_server: RedisServer, database_url: str
) -> None:
    """A plain URL at a sentinel (which knows no stream command) and a Sentinel URL at a plain
    server (which knows no SENTINEL) are settings to change, not a Redis to wait for."""
    at_sentinel = f"redis://127.0.0.1:{sentinels.sentinel_ports[0]}/0"
    at_plain = f"redis+sentinel://127.0.0.1:{redis_server.port}/{sentinels.master_name}"
    await wrong_kind_refused(at_sentinel, "redis+sentinel://<sentinels>", "orders", database_url)
    await wrong_kind_refused(at_plain, "not a Sentinel", "orders", database_url)
