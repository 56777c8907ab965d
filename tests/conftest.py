"""Fixtures: a throwaway redis-server and PostgreSQL per test session, isolated per test."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator

import pytest
import redis.asyncio as aioredis

from streamscale.core.streams import connect
from tests.support.servers import PostgresServer, RedisServer, running_postgres, running_redis


def _set_loop(policy: asyncio.AbstractEventLoopPolicy) -> asyncio.AbstractEventLoop | None:
    """The policy's current loop, without creating one (the default policy's private slot)."""
    return getattr(getattr(policy, "_local", None), "_loop", None)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Close the event loop looptime 0.9 creates (and leaves open) around a sync test.

    looptime asks the loop policy for a loop even in sync tests; the policy makes a new one,
    whose ResourceWarning then fails whichever async test runs next (warnings are errors).
    """
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        return (yield)
    policy = asyncio.get_event_loop_policy()
    before = _set_loop(policy)
    try:
        return (yield)
    finally:
        after = _set_loop(policy)
        if after is not None and after is not before and not after.is_running():
            after.close()
            policy.set_event_loop(before)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session; tests isolate themselves by key names (`names`)."""
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session; each test gets its own database (`database_url`)."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that kill, pause or restart it."""
    with running_redis() as server:
        yield server


@pytest.fixture
def fresh_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own, for tests that stop or restart it."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def names() -> Callable[[str], str]:
    """Unique key names for this test: `names("orders")` -> `orders-<uuid>`."""
    token = uuid.uuid4().hex[:10]
    return lambda base: f"{base}-{token}"


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_server.url)
    yield client
    await client.aclose()


def make_database(server: PostgresServer) -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    server.psql(f"CREATE DATABASE {name}")
    return server.url(name)


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A PostgreSQL database of this test's own on the session's cluster."""
    url = make_database(postgres_server)
    yield url
    name = url.rsplit("/", 1)[1]
    postgres_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
