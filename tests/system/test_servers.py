"""The throwaway servers and processes themselves work: a test that uses them can trust them."""

import pytest
import redis

from tests.support import consumers
from tests.support.servers import PostgresServer, RedisServer


async def test_redis_restart_empty_forgets_keys(fresh_redis: RedisServer) -> None:
    client = redis.Redis.from_url(fresh_redis.url)
    client.set("k", "v")
    fresh_redis.restart(empty=True)
    client = redis.Redis.from_url(fresh_redis.url)
    assert client.get("k") is None


def test_postgres_runs_sql(postgres_server: PostgresServer) -> None:
    assert postgres_server.psql("SELECT 40 + 2") == "42"


def test_a_consumer_s_output_is_its_own_when_its_port_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ports are reused within a run and across runs; an earlier consumer's log on the same
    port must not show up in this one's output (tests assert no Traceback, no ERROR)."""
    monkeypatch.setattr(consumers, "free_port", lambda: 40999)
    earlier, later = consumers.ConsumerProcess(), consumers.ConsumerProcess()
    earlier.log.write_text("Traceback (most recent call last): an earlier consumer's\n")
    try:
        assert later.output() == ""
    finally:
        earlier.log.unlink()
