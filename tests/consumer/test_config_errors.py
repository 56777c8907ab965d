"""Settings and surroundings that cannot work: exit 2 with one message that says what to fix.

Each case runs a real consumer process against real servers and checks the exit code and that
the output explains itself without a traceback (retrying for ever would be the other failure).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
import redis

from tests.support.consumers import ConsumerProcess, wait_until
from tests.support.servers import RedisServer


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
