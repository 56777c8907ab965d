"""The PostgreSQL sink sends batches with COPY, and with INSERT ... ON CONFLICT DO NOTHING where
COPY cannot take them, on a real PostgreSQL.

A statement-level trigger notes how each batch went in ("COPY" or "INSERT"): COPY fires INSERT
triggers too, and a failed statement leaves no note.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import CITEXT
from sqlmodel import Field, SQLModel

from examples.models import Product
from streamscale.consumer.messages import Message
from streamscale.consumer.sinks import sql
from streamscale.consumer.sinks.sql import PostgresSink
from streamscale.core.errors import ConfigError, TransientError
from tests.support.consumers import ConsumerProcess, produce, product, wait_until
from tests.support.proxy import HoldingProxy
from tests.support.servers import PostgresServer, RedisServer

NOTE_STATEMENTS = """
CREATE TABLE written_by (n serial, how text);
GRANT ALL ON written_by, written_by_n_seq TO PUBLIC;
CREATE FUNCTION note_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO written_by (how) VALUES (split_part(current_query(), ' ', 1));
    RETURN NULL;
END $$;
CREATE TRIGGER note_statement AFTER INSERT ON product
    FOR EACH STATEMENT EXECUTE FUNCTION note_statement();
"""


def messages(
    first: int, last: int, *, redelivered: bool = False, **changes: object
) -> list[Message]:
    return [
        Message(f"{n}-0", {}, {**product(n), **changes}, None, "orders", redelivered=redelivered)
        for n in range(first, last + 1)
    ]


def written_by(pg: PostgresServer, url: str) -> list[str]:
    return pg.psql("SELECT how FROM written_by ORDER BY n", _db(url)).split()


def stored(pg: PostgresServer, url: str) -> list[str]:
    return pg.psql("SELECT stream_id FROM product ORDER BY id", _db(url)).split()


def _db(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@pytest.fixture
async def sink(database_url: str, postgres_server: PostgresServer) -> AsyncIterator[PostgresSink]:
    value = PostgresSink(database_url, Product, ["orders"], 2)
    await value.start()
    postgres_server.psql(NOTE_STATEMENTS, _db(database_url))
    yield value
    await value.close()


async def test_messages_delivered_before_go_in_with_insert_and_copy_goes_on(
    sink: PostgresSink, postgres_server: PostgresServer, database_url: str
) -> None:
    """A restarted consumer's own pending entries, or claimed ones, may be stored already: they
    go straight to INSERT (a failed COPY would leave the rows it wrote dead in the table), and
    the next new batch goes in with COPY."""
    assert (await sink.write(messages(1, 10))).rejected == {}
    assert (await sink.write(messages(5, 15, redelivered=True))).rejected == {}
    assert (await sink.write(messages(16, 20))).rejected == {}
    assert stored(postgres_server, database_url) == [f"{n}-0" for n in range(1, 21)]
    assert written_by(postgres_server, database_url) == ["COPY", "INSERT", "COPY"]


@pytest.mark.timeout(60)
async def test_a_restarted_consumer_inserts_its_own_pending_entries_and_copies_new_ones(
    database_url: str, postgres_server: PostgresServer, redis_server: RedisServer,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    """The consumer flags what it reads back from its pending list (a crash between its write
    and its ack): that batch goes in with INSERT, new entries with COPY."""
    stream = names("orders")
    creator = PostgresSink(database_url, Product, [stream], 1)
    await creator.start()  # the table, for the trigger that notes how batches go in
    await creator.close()
    postgres_server.psql(NOTE_STATEMENTS, _db(database_url))
    client = redis.Redis.from_url(redis_server.url)
    client.xgroup_create(stream, "writers", id="0", mkstream=True)
    produce(client, stream, [product(n) for n in range(10)])
    client.xreadgroup("writers", "pod-1", {stream: ">"}, count=10)  # then pod-1 crashed
    consumer = ConsumerProcess(
        redis_url=redis_server.url, database_url=database_url, stream=stream, group="writers",
        model="examples.models:Product", consumer="pod-1", concurrency=1, claim_idle_ms=60_000,
    )  # fmt: skip
    try:
        consumer.start()
        wait_until(lambda: len(stored(postgres_server, database_url)) == 10, 30, what="10 rows")
        produce(client, stream, [product(n) for n in range(10, 20)])
        wait_until(lambda: len(stored(postgres_server, database_url)) == 20, 30, what="20 rows")
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
        client.close()
    first, *then = written_by(postgres_server, database_url)
    assert first == "INSERT" and then and set(then) == {"COPY"}, [first, *then]


async def test_stored_rows_delivered_as_new_go_in_with_insert(
    sink: PostgresSink, postgres_server: PostgresServer, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(sql, "COPY_PAUSE_BATCHES", 1)
    assert (await sink.write(messages(1, 10))).rejected == {}
    # Entries 5..10 again as new ones (a failover lost their deliveries, not their rows): COPY
    # fails on them, ON CONFLICT skips them.
    assert (await sink.write(messages(5, 15))).rejected == {}
    assert (await sink.write(messages(16, 20))).rejected == {}  # a batch after it: INSERT
    assert (await sink.write(messages(21, 25))).rejected == {}  # and COPY again
    assert stored(postgres_server, database_url) == [f"{n}-0" for n in range(1, 26)]
    assert written_by(postgres_server, database_url) == ["COPY", "INSERT", "INSERT", "COPY"]


async def test_a_row_the_table_refuses_is_isolated_through_insert(
    sink: PostgresSink, postgres_server: PostgresServer, database_url: str
) -> None:
    postgres_server.psql(
        "ALTER TABLE product ADD CONSTRAINT affordable CHECK (price < 500)", _db(database_url)
    )
    batch = messages(1, 6)
    batch[2].payload = {**product(3), "price": "700.00"}  # type: ignore[dict-item]
    result = await sink.write(batch)
    assert list(result.rejected) == ["3-0"]
    assert "affordable" in result.rejected["3-0"]
    assert stored(postgres_server, database_url) == ["1-0", "2-0", "4-0", "5-0", "6-0"]


async def test_a_value_asyncpg_cannot_encode_is_isolated_and_the_connection_goes_on(
    sink: PostgresSink, postgres_server: PostgresServer, database_url: str
) -> None:
    """COPY raises the encoder's own error (and asyncpg cancels the COPY) where INSERT raises
    asyncpg's DataError: the row is rejected all the same, the others stored."""
    batch = messages(1, 6)
    batch[4].payload = {**product(5), "created_at": "9999-12-31T23:59:59-23:59"}  # type: ignore[dict-item]
    result = await sink.write(batch)
    assert list(result.rejected) == ["5-0"]
    assert stored(postgres_server, database_url) == ["1-0", "2-0", "3-0", "4-0", "6-0"]
    assert (await sink.write(messages(7, 8))).rejected == {}
    assert len(stored(postgres_server, database_url)) == 7


async def test_a_connection_the_server_ended_while_idle_fails_the_batch_quietly(
    database_url: str, postgres_server: PostgresServer
) -> None:
    """The server's FATAL error reaches a pooled connection before its closing does (PostgreSQL
    restarting, pg_terminate_backend): COPY finds the connection unusable. The batch fails as a
    transient failure, the next one goes in on a new connection, and the event loop reports no
    error (asyncpg leaves a waiter behind there, whose exception asyncio would log)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    proxy = HoldingProxy(postgres_server.port)
    parts = urlsplit(database_url)
    port = await proxy.start()
    sink = PostgresSink(
        urlunsplit(parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{port}")),
        Product, ["orders"], 1,
    )  # fmt: skip
    try:
        await sink.start()
        assert (await sink.write(messages(1, 5))).rejected == {}
        assert sink.pool is not None
        async with sink.pool.acquire() as conn:
            pid = conn.get_server_pid()
        postgres_server.psql(f"SELECT pg_terminate_backend({pid})")
        for _ in range(100):
            if proxy.closed_by_server:
                break
            await asyncio.sleep(0.02)
        assert proxy.closed_by_server == 1
        await asyncio.sleep(0.1)  # the client reads the server's last words
        with pytest.raises(TransientError):
            await sink.write(messages(6, 10))
        proxy.release()
        await asyncio.sleep(0.1)
        gc.collect()
        assert (await sink.write(messages(6, 10))).rejected == {}
        assert stored(postgres_server, database_url) == [f"{n}-0" for n in range(1, 11)]
        assert [context["message"] for context in reported] == []
        other = loop.create_future()  # any other unretrieved error still reaches the handler
        other.set_exception(RuntimeError("not asyncpg's"))
        del other
        gc.collect()
        assert [str(context["exception"]) for context in reported] == ["not asyncpg's"]
    finally:
        await sink.close()
        await proxy.close()
        loop.set_exception_handler(None)


async def test_a_table_with_an_insert_rule_is_refused_at_start(
    database_url: str, postgres_server: PostgresServer
) -> None:
    """PostgreSQL refuses INSERT ... ON CONFLICT on it, and COPY would skip the rule without a
    word: say so, instead of retrying for ever."""
    first = PostgresSink(database_url, Product, ["orders"], 2)
    await first.start()
    await first.close()
    postgres_server.psql(
        "CREATE TABLE audit (sku text);"
        "CREATE RULE audit AS ON INSERT TO product DO ALSO INSERT INTO audit VALUES (NEW.sku)",
        _db(database_url),
    )
    ruled = PostgresSink(database_url, Product, ["orders"], 2)
    with pytest.raises(ConfigError, match=r"INSERT rules \(audit\).*CREATE TRIGGER"):
        await ruled.start()
    await ruled.close()


@pytest.fixture
def owner_url(database_url: str, postgres_server: PostgresServer) -> str:
    """The database for a role that is no superuser (superusers bypass row-level security)."""
    db = _db(database_url)
    postgres_server.psql(
        "DO $$ BEGIN CREATE ROLE streamscale_writer LOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        f"GRANT ALL ON DATABASE {db} TO streamscale_writer;",
    )
    postgres_server.psql("GRANT ALL ON SCHEMA public TO streamscale_writer", db)
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(netloc="streamscale_writer@" + parts.netloc.split("@")[1]))


async def test_row_level_security_turns_copy_off_while_running(
    owner_url: str, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    db = _db(owner_url)
    secure = (
        "ALTER TABLE product ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;"
        "CREATE POLICY anyone ON product USING (true) WITH CHECK (true)"
    )
    running = PostgresSink(owner_url, Product, ["orders"], 2)
    await running.start()
    try:
        postgres_server.psql(NOTE_STATEMENTS, db)
        await running.write(messages(1, 3))
        postgres_server.psql(secure, db)
        with caplog.at_level(logging.INFO, logger=sql.__name__):
            await running.write(messages(4, 6))  # COPY fails, INSERT works: INSERT from now on
            await running.write(messages(7, 9))
    finally:
        await running.close()
    assert written_by(postgres_server, owner_url) == ["COPY", "INSERT", "INSERT"]
    assert "INSERT only from now on: COPY failed with FeatureNotSupportedError" in caplog.text
    assert stored(postgres_server, owner_url) == [f"{n}-0" for n in range(1, 10)]


class Tagged(SQLModel, table=True):
    """A column type asyncpg has no binary encoder for (an extension's)."""

    __tablename__ = "tagged"
    id: int | None = Field(default=None, primary_key=True)
    stream_id: str = Field(unique=True)
    tag: str = Field(sa_type=CITEXT)


async def test_a_column_type_copy_cannot_encode_goes_in_with_insert(
    database_url: str, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    postgres_server.psql("CREATE EXTENSION citext", _db(database_url))
    tagged = PostgresSink(database_url, Tagged, ["tags"], 2)
    await tagged.start()
    try:
        with caplog.at_level(logging.INFO, logger=sql.__name__):
            for first in (1, 4):
                batch = [
                    Message(f"{n}-0", {}, {"tag": f"Tag-{n}"}, None, "tags")
                    for n in range(first, first + 3)
                ]
                assert (await tagged.write(batch)).rejected == {}
    finally:
        await tagged.close()
    assert "INSERT only from now on: COPY failed with InternalClientError" in caplog.text
    found = postgres_server.psql(
        "SELECT count(*) FROM tagged WHERE tag = 'TAG-5'", _db(database_url)
    )
    assert found == "1", "stored as citext: compared without case"


class NaiveStamp(SQLModel, table=True):
    """A naive time column (UTC wall time by streamscale's convention)."""

    __tablename__ = "stamps"
    id: int | None = Field(default=None, primary_key=True)
    stream_id: str = Field(unique=True)
    at: datetime.datetime = Field(sa_type=sa.DateTime(timezone=False))


async def test_a_column_of_another_type_than_the_model_s_goes_in_with_insert(
    database_url: str, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """COPY sends values in the column's own format with no cast: a naive time into a
    `timestamptz` column would be read in the process's local time zone. INSERT converts it
    in the session's UTC, whatever the consumer's TZ."""
    db = _db(database_url)
    postgres_server.psql(
        "CREATE TABLE stamps (id serial PRIMARY KEY, stream_id varchar UNIQUE NOT NULL, "
        "at timestamptz NOT NULL)",
        db,
    )
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        stamps = PostgresSink(database_url, NaiveStamp, ["stamps"], 2)
        with caplog.at_level(logging.INFO, logger=sql.__name__):
            await stamps.start()
        try:
            batch = [Message("1-0", {}, {"at": "2025-04-22T10:00:00"}, None, "stamps")]
            assert (await stamps.write(batch)).rejected == {}
        finally:
            await stamps.close()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    utc = "SELECT to_char(at AT TIME ZONE 'UTC', 'HH24:MI') FROM stamps"
    assert postgres_server.psql(utc, db) == "10:00"
    assert "INSERT only: column(s) at (timestamp with time zone)" in caplog.text
