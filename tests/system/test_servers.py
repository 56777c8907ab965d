"""The throwaway servers themselves work: a test that uses them can trust them."""

import redis

from tests.support.servers import PostgresServer, RedisServer


async def test_redis_restart_empty_forgets_keys(fresh_redis: RedisServer) -> None:
    client = redis.Redis.from_url(fresh_redis.url)
    client.set("k", "v")
    fresh_redis.restart(empty=True)
    client = redis.Redis.from_url(fresh_redis.url)
    assert client.get("k") is None


def test_postgres_runs_sql(postgres_server: PostgresServer) -> None:
    assert postgres_server.psql("SELECT 40 + 2") == "42"
