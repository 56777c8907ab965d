"""Settings and surroundings that cannot work: exit 2 with one message that says what to fix.

Each case runs a real consumer process against real servers and checks the exit code and that
the output explains itself without a traceback (retrying for ever would be the other failure).
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Callable
from typing import Any

import pytest
import redis

from streamscale.consumer.sinks.column_types import PgType, silent_change
from tests.support.consumers import ConsumerProcess, produce, wait_until
from tests.support.servers import PostgresServer, RedisServer


def refused(consumer: ConsumerProcess) -> str:
    """The output of a consumer that must exit 2 on its own, checked to have no traceback."""
    consumer.start(wait_ready=False)
    try:
        code = consumer.wait(30)
    finally:
        consumer.kill()
    out = consumer.output()
    assert code == 2, out
    assert "Traceback" not in out, out
    return out


def base(redis_url: str, database_url: str, stream: str, **extra: object) -> dict[str, object]:
    return {
        "redis_url": redis_url,
        "database_url": database_url,
        "stream": stream,
        "group": "writers",
        "model": "tests.support.models:Product",
        **extra,
    }


@pytest.mark.timeout(60)
def test_wrong_redis_credentials_are_a_config_error_like_wrong_postgresql_ones(
    fresh_redis: RedisServer, database_url: str, names: Callable[[str], str]
) -> None:
    redis.Redis.from_url(fresh_redis.url).config_set("requirepass", "right")
    wrong = fresh_redis.url.replace("redis://", "redis://:wrong@")
    out = refused(ConsumerProcess(**base(wrong, database_url, names("auth"))))
    assert "Redis refused the credentials in STREAMSCALE_REDIS_URL" in out
    assert "wrong" not in out.replace("redis://:wrong", "")  # the password is never quoted


@pytest.mark.timeout(60)
def test_a_redis_database_index_out_of_range_says_so(
    redis_server: RedisServer, database_url: str, names: Callable[[str], str]
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/99"
    out = refused(ConsumerProcess(**base(url, database_url, names("db"))))
    assert "database number at the end of STREAMSCALE_REDIS_URL does not exist" in out


@pytest.mark.timeout(60)
def test_a_stream_key_of_another_type_says_so(
    redis_server: RedisServer, database_url: str, names: Callable[[str], str]
) -> None:
    stream = names("string-key")
    redis.Redis.from_url(redis_server.url).set(stream, "not a stream")
    out = refused(ConsumerProcess(**base(redis_server.url, database_url, stream)))
    assert f"Redis key {stream!r} is not a stream" in out


@pytest.mark.timeout(60)
def test_an_http_port_in_use_says_so_and_port_0_takes_a_free_one(
    redis_server: RedisServer, database_url: str, names: Callable[[str], str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = refused(
            ConsumerProcess(**base(redis_server.url, database_url, names("port"), http_port=port))
        )
    assert f"cannot serve /metrics, /healthz and /readyz on 127.0.0.1:{port}" in out
    assert "STREAMSCALE_HTTP_PORT" in out
    free = ConsumerProcess(**base(redis_server.url, database_url, names("port"), http_port=0))
    free.start(wait_ready=False)
    try:
        # No port to probe from outside: the log names the one it took.
        wait_until(lambda: "consuming" in free.output(), 30, what="the consumer to start")
        assert "serving /metrics, /healthz and /readyz on 127.0.0.1:" in free.output()
        assert "127.0.0.1:0\n" not in free.output()
        assert free.terminate() == 0
    finally:
        free.kill()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("setting", ["stream", "group", "consumer", "dead_letter_stream"])
def test_empty_names_are_refused(
    setting: str, redis_server: RedisServer, database_url: str, names: Callable[[str], str]
) -> None:
    settings = base(redis_server.url, database_url, names("empty"))
    settings[setting] = ""
    out = refused(ConsumerProcess(**settings))
    assert "invalid settings" in out and setting in out


@pytest.mark.timeout(60)
def test_a_missing_secrets_dir_is_refused_not_replaced_by_defaults(
    redis_server: RedisServer, database_url: str, names: Callable[[str], str], tmp_path
) -> None:
    missing = tmp_path / "not-mounted"
    settings = base(redis_server.url, database_url, names("secrets"), secrets_dir=missing)
    out = refused(ConsumerProcess(**settings))
    assert f"STREAMSCALE_SECRETS_DIR='{missing}' is not a directory" in out


@pytest.mark.timeout(60)
def test_a_postgresql_database_that_does_not_exist_says_so(
    redis_server: RedisServer, database_url: str, names: Callable[[str], str]
) -> None:
    url = database_url.rsplit("/", 1)[0] + "/no_such_database"
    out = refused(ConsumerProcess(**base(redis_server.url, url, names("nodb"))))
    assert '"no_such_database" does not exist' in out and "CREATE DATABASE" in out


@pytest.mark.timeout(60)
def test_verify_full_without_a_root_certificate_says_so(
    redis_server: RedisServer, database_url: str, names: Callable[[str], str], tmp_path
) -> None:
    url = database_url + "?sslmode=verify-full"
    consumer = ConsumerProcess(**base(redis_server.url, url, names("tls")))
    consumer.env["HOME"] = str(tmp_path)  # no ~/.postgresql/root.crt there
    out = refused(consumer)
    assert "root certificate file" in out and "sslrootcert" in out


# --- an existing table whose column types do not fit the model (issue 10) -----------------------

READING = "tests.support.models:Reading"
READINGS = {  # the columns of tests.support.models:Reading, as the consumer would create them
    "stream_id": "varchar PRIMARY KEY",
    "sensor": "varchar(32) NOT NULL",
    "count": "integer NOT NULL",
    "value": "numeric(10, 3) NOT NULL",
    "measured_at": "timestamp with time zone NOT NULL",
    "labels": "jsonb NOT NULL",
}


def reading(n: int) -> dict[str, Any]:
    return {
        "sensor": f"s-{n % 7}",
        "count": n,
        "value": f"{n}.125",
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "labels": {"room": f"r{n % 3}", "n": n},
    }


def create_readings(pg: PostgresServer, database_url: str, **types: str) -> None:
    """The table `readings` made beforehand, with some columns of other types."""
    columns = {**READINGS, **types}
    ddl = ", ".join(f"{name} {type_}" for name, type_ in columns.items())
    sql(pg, database_url, f"CREATE TABLE readings ({ddl})")


def sql(pg: PostgresServer, database_url: str, statement: str) -> str:
    return pg.psql(statement, database=database_url.rsplit("/", 1)[1])


def stores_everything(
    redis_url: str, database_url: str, pg: PostgresServer, client: redis.Redis, stream: str,
    total: int,
) -> None:  # fmt: skip
    """A consumer of `stream` stores its `total` readings, nothing dead-lettered, exits 0."""
    consumer = ConsumerProcess(**base(redis_url, database_url, stream, model=READING)).start()
    try:
        count = "SELECT count(*) FROM readings"
        wait_until(lambda: sql(pg, database_url, count) == str(total), 30, what="the rows")
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.output()
    assert client.xlen(f"{stream}:dlq") == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("column", "table_type", "shown", "model_type", "why"),
    [
        ("count", "text", "text", "INTEGER", "values as text"),
        ("labels", "text", "text", "JSONB", "values as text"),
        ("measured_at", "date", "date", "TIMESTAMP WITH TIME ZONE", "drop the time of day"),
        ("value", "integer", "integer", "NUMERIC(10, 3)", "round"),
        ("sensor", "jsonb", "jsonb", "VARCHAR(32)", "cannot store the model's values"),
        ("count", "boolean", "boolean", "INTEGER", "cannot store the model's values"),
    ],
)  # fmt: skip
def test_a_column_of_a_type_that_does_not_fit_the_model_is_refused_with_the_alter_table(
    column: str, table_type: str, shown: str, model_type: str, why: str,
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    """Refused at start-up before anything is read; the ALTER TABLE it prints is the fix."""
    create_readings(postgres_server, database_url, **{column: f"{table_type} NOT NULL"})
    client = redis.Redis.from_url(redis_server.url)
    stream = names("typed")
    ids = produce(client, stream, (reading(n) for n in range(30)))
    out = refused(ConsumerProcess(**base(redis_server.url, database_url, stream, model=READING)))
    line = f"    {column}: the table has {shown}, the model {model_type}: "
    assert line in out and why in out.split(line, 1)[1].splitlines()[0], out
    assert sum(f"    {c}: the table has " in out for c in READINGS) == 1, out  # only that one
    alter = (
        f"ALTER TABLE readings ALTER COLUMN {column} TYPE {model_type}"
        f" USING {column}::{model_type};"
    )
    assert alter in out, out
    assert all(g["entries-read"] in (0, None) for g in client.xinfo_groups(stream))

    sql(postgres_server, database_url, alter)  # the fix the message names works
    stores_everything(redis_server.url, database_url, postgres_server, client, stream, len(ids))
    client.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "types",
    [
        {"sensor": "text", "count": "bigint", "value": "numeric", "labels": "json"},
        {"stream_id": "text PRIMARY KEY", "sensor": "varchar(200)", "count": "smallint",
         "value": "numeric(20, 6)", "measured_at": "timestamptz"},
        {"sensor": "character(32)", "count": "numeric(12, 0)", "value": "double precision"},
    ],
    ids=["wider", "narrower-or-other-precision", "other-kinds"],
)  # fmt: skip
def test_column_types_that_fit_the_model_are_not_refused(
    types: dict[str, str], redis_server: RedisServer, postgres_server: PostgresServer,
    database_url: str, names: Callable[[str], str],
) -> None:  # fmt: skip
    """varchar(n) against text, int4 against int8 or int2, another numeric precision: fine."""
    create_readings(
        postgres_server, database_url,
        **{c: t if "PRIMARY" in t else f"{t} NOT NULL" for c, t in types.items()},
    )  # fmt: skip
    client = redis.Redis.from_url(redis_server.url)
    stream = names("fits")
    ids = produce(client, stream, (reading(n) for n in range(30)))
    stores_everything(redis_server.url, database_url, postgres_server, client, stream, len(ids))
    client.close()


@pytest.mark.timeout(90)
def test_an_aware_time_into_a_timestamp_column_is_stored_as_its_utc_time_not_refused(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    """What tables made with SQLModel 0.0.44 and earlier have, whatever the server's TimeZone."""
    db = database_url.rsplit("/", 1)[1]
    postgres_server.psql(f"ALTER DATABASE {db} SET timezone TO 'Asia/Kolkata'")
    create_readings(postgres_server, database_url, measured_at="timestamp NOT NULL")
    client = redis.Redis.from_url(redis_server.url)
    stream = names("naive")
    payload = {**reading(1), "measured_at": "2026-01-02T03:04:05+02:00"}
    produce(client, stream, [payload])
    stores_everything(redis_server.url, database_url, postgres_server, client, stream, 1)
    stored = sql(postgres_server, database_url, "SELECT measured_at FROM readings")
    assert stored == "2026-01-02 01:04:05"  # UTC, not Kolkata's 06:34:05
    client.close()


@pytest.mark.timeout(90)
def test_a_column_type_changed_under_a_running_consumer_stops_it_with_exit_2_not_a_retry(
    redis_server: RedisServer, postgres_server: PostgresServer, database_url: str,
    names: Callable[[str], str],
) -> None:  # fmt: skip
    """An asyncpg datatype error is not "database unavailable": exit 2, the batch stays pending."""
    client = redis.Redis.from_url(redis_server.url)
    stream = names("retyped")
    first = produce(client, stream, (reading(n) for n in range(20)))
    consumer = ConsumerProcess(**base(redis_server.url, database_url, stream, model=READING))
    consumer.start()
    try:
        count = "SELECT count(*) FROM readings"
        wait_until(lambda: sql(postgres_server, database_url, count) == str(len(first)), 30)
        alter = "ALTER TABLE readings ALTER COLUMN sensor TYPE jsonb USING to_jsonb(sensor)"
        sql(postgres_server, database_url, alter)
        later = produce(client, stream, (reading(n) for n in range(20, 30)))
        code = consumer.wait(30)
    finally:
        consumer.kill()
    out = consumer.output()
    assert code == 2, out
    assert "writing into table readings failed" in out and "Traceback" not in out, out
    assert 'column "sensor" is of type jsonb' in out and "ALTER TABLE" in out, out
    (group,) = client.xinfo_groups(stream)
    assert group["entries-read"] - group["pending"] == len(first) < group["entries-read"]
    assert group["entries-read"] <= len(first) + len(later)
    assert client.xlen(f"{stream}:dlq") == 0
    assert sql(postgres_server, database_url, "SELECT count(*) FROM readings") == str(len(first))
    client.close()


@pytest.mark.parametrize(
    ("model", "table", "refused"),
    [
        (("timestamp without time zone", "timestamp", "D"), ("date", "date", "D"), True),
        (("date", "date", "D"), ("timestamp with time zone", "timestamptz", "D"), False),
        (("uuid", "uuid", "U"), ("text", "text", "S"), False),
        (("mood", "mood", "E"), ("text", "text", "S"), False),
        (("bytea", "bytea", "U"), ("text", "text", "S"), True),
        (("double precision", "float8", "N"), ("bigint", "int8", "N"), True),
        (("bigint", "int8", "N"), ("double precision", "float8", "N"), False),
        (("jsonb", "jsonb", "U"), ("json", "json", "U"), False),
    ],
)
def test_which_accepted_type_pairs_would_change_the_values_silently(
    model: tuple[str, str, str], table: tuple[str, str, str], refused: bool
) -> None:
    """The pairs PostgreSQL accepts that the process tests above do not start a consumer for."""
    assert (silent_change(PgType(*model), PgType(*table)) is not None) == refused
