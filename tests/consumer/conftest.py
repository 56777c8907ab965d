"""Fixtures of the consumer tests."""

import pytest
import redis

from tests.support.servers import RedisServer


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    """A synchronous client of the session's redis-server, for set-up and checks."""
    return redis.Redis.from_url(redis_server.url)
