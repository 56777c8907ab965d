"""Security: least-privilege Redis ACL users, TLS to Redis and PostgreSQL, secrets never shown.

The ACL lines are read from docs/security.md, so the documentation is what is tested.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kmock
import pytest
import redis
from redis import exceptions as redis_errors
from redis.asyncio.connection import SSLConnection

from streamscale.core.deadletter import Scripts
from streamscale.core.streams import connect
from streamscale.operator.observing import observe
from streamscale.operator.reclaiming import Rules, reclaim
from streamscale.operator.retention import trim
from streamscale.operator.specs import Retention
from tests.support import kube as h
from tests.support.chaos import dead_letters, drained, group_state
from tests.support.commands import connected_round_trip
from tests.support.consumers import ROOT, ConsumerProcess, produce, product, wait_until
from tests.support.servers import PostgresServer, RedisServer, free_port, running_postgres
from tests.support.tls import Authority, TlsPostgresServer, TlsRedisServer, authority

DOC = ROOT / "docs" / "security.md"
STREAM = "orders"
GROUP = "writers"
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex


def acl_line(user: str, password: str) -> str:
    """The documented `user <name> ...` line for `user`, with its password filled in."""
    for line in DOC.read_text().splitlines():
        if line.startswith(f"user {user} "):
            placeholder = re.search(r">[A-Z_]+_PASSWORD", line)
            assert placeholder, line
            return line.replace(placeholder.group(0), ">" + password)
    raise AssertionError(f"docs/security.md has no ACL line for {user}")


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {"consumer": "cons-" + uuid.uuid4().hex, "operator": "oper-" + uuid.uuid4().hex}


@pytest.fixture(scope="module")
def acl_redis(passwords: dict[str, str]) -> Iterator[RedisServer]:
    """A redis-server whose users are the documented ones plus an administrator."""
    server = RedisServer()
    aclfile = server.dir / "users.acl"
    aclfile.write_text(
        f"user default on >{ADMIN_PASSWORD} ~* &* +@all\n"
        + acl_line("streamscale-consumer", passwords["consumer"]) + "\n"
        + acl_line("streamscale-operator", passwords["operator"]) + "\n"
    )  # fmt: skip
    server.extra = ["--aclfile", str(aclfile)]
    server.start()
    try:
        yield server
    finally:
        server.close()


def user_url(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


@pytest.fixture
def admin(acl_redis: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(user_url(acl_redis, "default", ADMIN_PASSWORD))
    client.delete(STREAM, STREAM + ":dlq", "other")
    yield client
    client.close()


def refused(call: Callable[[], object]) -> str:
    """The error Redis answers `call` with; fails if Redis allowed it."""
    try:
        call()
    except redis_errors.ResponseError as exc:
        text = str(exc)
        assert isinstance(exc, redis_errors.NoPermissionError) or any(
            words in text for words in ("no permissions", "can't access", "can't run")
        ), text
        return text
    raise AssertionError("Redis allowed a command the ACL should refuse")


@pytest.mark.timeout(120)
def test_consumer_acl_user_consumes_end_to_end_and_nothing_else(
    acl_redis: RedisServer, admin: redis.Redis, passwords: dict[str, str], database_url: str,
    postgres_server: PostgresServer,
) -> None:  # fmt: skip
    """Read, store, ack, dead-letter (invalid, max-deliveries, deleted), claim, renew, leave."""
    admin.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    ids = produce(admin, STREAM, [product(n) for n in range(300)] + [b"{poison"])
    # Entries stranded on a dead consumer: 5 delivered too often, one deleted while pending.
    admin.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=10)
    for _ in range(4):
        admin.xclaim(STREAM, GROUP, "ghost", 0, ids[:5])
    admin.xdel(STREAM, ids[9])
    time.sleep(0.3)
    url = user_url(acl_redis, "streamscale-consumer", passwords["consumer"])
    consumer = ConsumerProcess(
        redis_url=url, database_url=database_url, stream=STREAM, group=GROUP,
        model="tests.support.models:Product", consumer="pod-acl", claim_idle_ms=200,
        max_deliveries=3, batch_size=50,
    ).start()  # fmt: skip
    try:
        wait_until(lambda: group_state(admin, STREAM, GROUP).get("pending") == 0
                   and admin.xlen(STREAM + ":dlq") == 7, 60, 0.2, "drained")  # fmt: skip
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    output = consumer.output()
    assert "NOPERM" not in output and "permission" not in output.lower(), output
    db = database_url.rsplit("/", 1)[1]
    stored = set(postgres_server.psql("SELECT stream_id FROM products", db).split())
    letters = {d["x-original-id"]: d["x-reason"] for d in dead_letters(admin, STREAM + ":dlq")}
    assert letters == {
        **dict.fromkeys(ids[:5], "max-deliveries"), ids[9]: "deleted", ids[-1]: "invalid"
    }  # fmt: skip
    assert stored == set(ids) - set(letters)
    # The leave script (XINFO CONSUMERS, XGROUP DELCONSUMER) ran: only the ghost is left.
    names = {c["name"].decode() for c in admin.xinfo_consumers(STREAM, GROUP)}
    assert names == {"ghost"}

    client = redis.Redis.from_url(url)
    assert client.ping()
    refused(client.flushall)
    refused(lambda: client.xadd(STREAM, {"data": "{}"}))  # never its own input stream
    refused(lambda: client.xadd("other", {"data": "{}"}))
    refused(lambda: client.xdel(STREAM, ids[10]))
    refused(lambda: client.delete(STREAM + ":dlq"))
    refused(lambda: client.xrange("other"))
    refused(lambda: client.keys("*"))
    refused(lambda: client.config_get("*"))
    refused(lambda: client.xgroup_destroy(STREAM, GROUP))
    refused(lambda: client.eval("return 1", 0))
    # A script runs with the caller's rights: loading one that writes elsewhere does not help.
    sha = client.script_load("return redis.call('XADD', KEYS[1], '*', 'a', 'b')")
    refused(lambda: client.evalsha(sha, 1, STREAM))
    refused(lambda: client.evalsha(sha, 1, "other"))
    assert client.xadd(STREAM + ":dlq", {"a": "b"})  # what the selector is for
    client.close()


@pytest.mark.timeout(60)
async def test_operator_acl_user_observes_moves_trims_and_writes_nothing_else(
    acl_redis: RedisServer, admin: redis.Redis, passwords: dict[str, str]
) -> None:
    ids = produce(admin, STREAM, [product(n) for n in range(100)])
    admin.xgroup_create(STREAM, GROUP, id="0")
    admin.xreadgroup(GROUP, "gone-pod", {STREAM: ">"}, count=40)
    admin.xack(STREAM, GROUP, *ids[:20])
    url = user_url(acl_redis, "streamscale-operator", passwords["operator"])
    client = connect(url)
    try:
        obs = await observe(client, STREAM, GROUP, estimate_limit=1000)
        assert (obs.lag, obs.pending, len(obs.consumers)) == (60, 20, 1)
        # A group the operator creates itself before the first pod runs.
        assert (await observe(client, STREAM, "new-group", estimate_limit=1000)).lag == 100
        result = await reclaim(
            Scripts(client), STREAM, GROUP, STREAM + ":dlq",
            consumers=list(obs.consumers), pods=set(),
            rules=Rules(max_deliveries=5, idle_ms=60_000, min_idle_ms=0, gone_idle_ms=0),
        )  # fmt: skip
        assert result.dead_lettered == {"idle": 20}
        assert result.removed == ["gone-pod"]
        admin.xgroup_destroy(STREAM, "new-group")
        trimmed = await trim(client, STREAM, Retention(min_id=ids[30]))
        assert trimmed == 30
    finally:
        await client.aclose()
    assert admin.xlen(STREAM + ":dlq") == 20
    assert group_state(admin, STREAM, GROUP)["pending"] == 0

    sync = redis.Redis.from_url(url)
    assert sync.xinfo_groups(STREAM) and sync.xrange(STREAM, count=1)
    refused(sync.flushall)
    refused(lambda: sync.xadd(STREAM, {"data": "{}"}))
    refused(lambda: sync.xdel(STREAM, ids[50]))
    refused(lambda: sync.delete(STREAM))
    refused(lambda: sync.xreadgroup(GROUP, "thief", {STREAM: ">"}, count=1))
    refused(lambda: sync.xgroup_destroy(STREAM, GROUP))
    refused(lambda: sync.xgroup_setid(STREAM, GROUP, "$"))
    refused(lambda: sync.set("x", "y"))
    refused(lambda: sync.eval("return 1", 0))
    sha = sync.script_load("return redis.call('XADD', KEYS[1], '*', 'a', 'b')")
    refused(lambda: sync.evalsha(sha, 1, STREAM))
    sha = sync.script_load("return redis.call('DEL', KEYS[1])")
    refused(lambda: sync.evalsha(sha, 1, STREAM))
    sync.close()


# TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> Iterator[Authority]:
    with authority() as value:
        yield value


@pytest.fixture(scope="module")
def tls_redis(ca: Authority) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(ca)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def tls_postgres(ca: Authority) -> Iterator[TlsPostgresServer]:
    server = TlsPostgresServer(ca)
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.timeout(90)
def test_consumer_over_tls_to_redis_and_postgres_with_verify_full(
    tls_redis: TlsRedisServer, tls_postgres: TlsPostgresServer, names: Callable[[str], str]
) -> None:
    client = redis.Redis.from_url(tls_redis.url)
    stream = names("tls")
    ids = produce(client, stream, [product(n) for n in range(500)])
    tls_postgres.psql("CREATE DATABASE tls")
    consumer = ConsumerProcess(
        redis_url=tls_redis.url, database_url=tls_postgres.url("tls"), stream=stream,
        group=GROUP, model="tests.support.models:Product",
    ).start()  # fmt: skip
    try:
        wait_until(lambda: drained(client, stream, GROUP, len(ids)), 30, 0.2, "drained")
        encrypted = tls_postgres.psql(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)"
            " WHERE datname = 'tls' AND ssl AND application_name <> 'psql'"
        )
        assert int(encrypted) >= 1
        assert consumer.terminate() == 0
    finally:
        consumer.kill()
    assert tls_postgres.psql("SELECT count(*) FROM products", "tls") == "500"
    # Nothing listens in plain text: Redis has no plain port, PostgreSQL rejects hostnossl.
    with pytest.raises(redis_errors.ConnectionError):
        redis.Redis(port=tls_redis.port, socket_timeout=2).ping()


async def test_a_tls_client_packs_with_hiredis(
    tls_redis: TlsRedisServer, names: Callable[[str], str]
) -> None:
    (cls,) = await connected_round_trip(tls_redis.url, names("orders"))
    assert issubclass(cls, SSLConnection)


@pytest.mark.timeout(60)
def test_a_certificate_from_another_ca_is_refused(
    tls_redis: TlsRedisServer, tls_postgres: TlsPostgresServer, names: Callable[[str], str]
) -> None:
    """verify-full and ssl_ca_certs really verify: a server the CA did not sign is refused."""
    with authority("someone else") as other:
        wrong = urllib.parse.quote(str(other.ca_cert))
        redis_url = tls_redis.url.split("?")[0] + f"?ssl_ca_certs={wrong}"
        pg_url = tls_postgres.url().split("?")[0] + f"?sslmode=verify-full&sslrootcert={wrong}"
        for redis_u, pg_u, what in (
            (redis_url, tls_postgres.url(), "Redis"),
            (tls_redis.url, pg_url, "database"),
        ):
            consumer = ConsumerProcess(
                redis_url=redis_u, database_url=pg_u, stream=names("tls"), group=GROUP
            ).start(wait_ready=False)
            try:
                wait_until(lambda c=consumer: "certificate verify failed" in c.output(), 20, 0.2,
                           f"{what}: certificate refused")  # fmt: skip
                assert consumer.get("/readyz")[0] == 503
                assert consumer.get("/healthz")[0] == 200
            finally:
                consumer.kill()
            assert f"{what} unavailable" in consumer.output()


# Secrets -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def password_postgres() -> Iterator[tuple[PostgresServer, str]]:
    """A cluster where role `writer` logs in with a password (scram-sha-256) and may do only
    what docs/security.md asks for."""
    password = "pg-" + uuid.uuid4().hex
    with running_postgres() as server:
        server.psql("CREATE DATABASE shop")
        server.psql(f"CREATE ROLE writer LOGIN PASSWORD '{password}'")
        server.psql("REVOKE ALL ON DATABASE shop FROM PUBLIC")
        server.psql("GRANT CONNECT ON DATABASE shop TO writer")
        server.psql("GRANT USAGE, CREATE ON SCHEMA public TO writer", "shop")
        hba = server.data / "pg_hba.conf"
        hba.write_text("host all writer 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        server.psql("SELECT pg_reload_conf()")
        yield server, password


def _leaks(text: str, secrets: list[str]) -> list[str]:
    forms = set()
    for secret in secrets:
        forms |= {secret, urllib.parse.quote(secret), secret[len(secret) // 2 :]}
    return sorted(form for form in forms if form in text)


@pytest.mark.timeout(120)
def test_no_secret_in_logs_metrics_or_health_answers_up_down_or_refused(
    acl_redis: RedisServer, admin: redis.Redis, passwords: dict[str, str],
    password_postgres: tuple[PostgresServer, str], tmp_path: Path, names: Callable[[str], str],
) -> None:  # fmt: skip
    pg, pg_password = password_postgres
    redis_password = passwords["consumer"]
    secrets = [redis_password, pg_password, ADMIN_PASSWORD]
    good_redis = user_url(acl_redis, "streamscale-consumer", redis_password)
    good_pg = f"postgresql://writer:{pg_password}@127.0.0.1:{pg.port}/shop"
    closed = free_port()
    produce(admin, STREAM, [product(n) for n in range(50)] + [b"{poison"])
    # Secrets from files, as a mounted Secret volume gives them (STREAMSCALE_SECRETS_DIR).
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    (secret_dir / "streamscale_redis_url").write_text(good_redis + "\n")
    (secret_dir / "streamscale_database_url").write_text(good_pg + "\n")
    base = {"stream": STREAM, "group": names("g"), "model": "tests.support.models:Product",
            "log_level": "DEBUG"}  # fmt: skip
    wrong_pg = good_pg.replace(pg_password, "x" + pg_password[1:])
    # Base64 passwords contain '/': left unescaped in a URL it ends the host part, and the
    # clients would report the password's first part as a bad port number.
    slashed = ["b64" + uuid.uuid4().hex[:12], uuid.uuid4().hex[:12] + "+x=", uuid.uuid4().hex[:9]]
    secrets += slashed
    slash_pg = f"postgresql://writer:{slashed[0]}/{slashed[1]}@127.0.0.1:{pg.port}/shop"
    slash_redis = user_url(acl_redis, "streamscale-consumer", f"{slashed[2]}#{slashed[0]}")
    both = {"redis_url": good_redis, "database_url": good_pg}
    scenarios: list[tuple[str, dict[str, object], str]] = [
        ("from files, all up", {"secrets_dir": secret_dir}, "ready"),
        ("json logs, all up", {**both, "log_format": "json"}, "ready"),
        ("database down", {**both, "database_url": good_pg.replace(str(pg.port), str(closed))},
         "database unavailable"),
        ("database password wrong", {**both, "database_url": wrong_pg}, "exit"),
        ("Redis down", {**both, "redis_url": good_redis.replace(str(acl_redis.port), str(closed))},
         "Redis unavailable"),
        # Refused credentials are a config error for Redis as for PostgreSQL: exit 2.
        ("Redis password wrong", {**both, "redis_url": good_redis.replace(redis_password, "no")},
         "exit"),
        ("database URL malformed", {**both, "database_url": good_pg.replace(f":{pg.port}", ":x")},
         "exit"),
        ("'/' in database password", {**both, "database_url": slash_pg}, "exit"),
        ("'#' in Redis password", {**both, "redis_url": slash_redis}, "exit"),
    ]  # fmt: skip
    # All at once: each scenario is a process that mostly waits (for a port, a backoff).
    consumers = [ConsumerProcess(**{**base, **extra}).start(wait_ready=False)
                 for _, extra, _ in scenarios]  # fmt: skip
    try:
        for (label, _, expect), consumer in zip(scenarios, consumers, strict=True):
            answers: list[str] = []
            if expect == "exit":
                assert consumer.wait(30) == 2, consumer.output()
            else:
                wait_until(
                    lambda c=consumer, e=expect: (c.ready() if e == "ready" else e in c.output()),
                    30, 0.2, f"{label}: {expect}",
                )  # fmt: skip
                if expect == "ready":
                    group = str(base["group"])
                    wait_until(
                        lambda g=group: group_state(admin, STREAM, g).get("pending") == 0
                        and admin.xlen(STREAM + ":dlq") >= 1,
                        30, 0.2, "drained",
                    )  # fmt: skip
                for path in ("/metrics", "/readyz", "/healthz"):
                    answers.append(consumer.get(path)[1])
            consumer.answers = answers  # type: ignore[attr-defined]
        for consumer in consumers:
            if consumer.proc is not None and consumer.proc.poll() is None:
                consumer.proc.terminate()
        for consumer in consumers:
            consumer.wait(30)
    finally:
        for consumer in consumers:
            consumer.kill()
    for (label, _, _), consumer in zip(scenarios, consumers, strict=True):
        everything = consumer.output() + "\n".join(getattr(consumer, "answers", []))
        assert not _leaks(everything, secrets), (label, _leaks(everything, secrets), everything)
        print(f"{label:<26} {len(everything):>7} characters of logs and answers, no secret")
    letters = dead_letters(admin, STREAM + ":dlq")
    assert not _leaks(repr(letters), secrets)


@pytest.mark.timeout(30)
async def test_operator_redis_errors_never_carry_the_password(
    acl_redis: RedisServer, passwords: dict[str, str]
) -> None:
    """The operator puts `{type}: {exc}` of Redis errors into status conditions and Events."""
    password = passwords["operator"]
    urls = [
        user_url(acl_redis, "streamscale-operator", "wrong-" + password),
        f"redis://streamscale-operator:{password}@127.0.0.1:{free_port()}/0",
    ]
    for url in urls:
        client = connect(url, socket_timeout=2)
        try:
            with pytest.raises(redis_errors.RedisError) as info:
                await asyncio.wait_for(observe(client, STREAM, GROUP, estimate_limit=10), 10)
        finally:
            await client.aclose()
        message = f"Redis unreachable ({type(info.value).__name__}: {info.value})"
        assert password not in message and password not in repr(info.value), message


@pytest.mark.timeout(60)
async def test_operator_status_events_deployments_and_logs_never_carry_the_password(
    kmock: kmock.KubernetesEmulator, acl_redis: RedisServer, admin: redis.Redis,
    passwords: dict[str, str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Three StreamConsumers whose Redis URL (a Secret) works, has a wrong password, or points
    nowhere: every status patch, Event, Deployment and log line the operator makes is clean."""
    caplog.set_level(logging.DEBUG)
    password = passwords["operator"]
    urls = {
        "good": user_url(acl_redis, "streamscale-operator", password),
        "refused": user_url(acl_redis, "streamscale-operator", "wrong-" + password),
        "down": f"redis://streamscale-operator:{password}@127.0.0.1:{free_port()}/0",
    }
    h.declare_resources(kmock)
    ids = produce(admin, STREAM, [product(n) for n in range(20)])
    admin.xgroup_create(STREAM, GROUP, id="0")
    admin.xreadgroup(GROUP, "gone-pod", {STREAM: ">"}, count=5)  # stranded: dead letters
    for name, url in urls.items():
        kmock.objects[h.SECRETS, h.NAMESPACE, name] = {
            "metadata": {"name": name, "namespace": h.NAMESPACE, "resourceVersion": "1"},
            "data": {"url": base64.b64encode(url.encode()).decode()},
        }
        kmock.objects[h.STC, h.NAMESPACE, name] = h.stream_consumer(name, {
            "stream": STREAM, "group": GROUP,
            "redis": {"urlSecretRef": {"name": name, "key": "url"}},
            "database": h.DATABASE,
            "consumer": {"image": "streamscale:test"},
            "scaling": {"minReplicas": 0, "maxReplicas": 2, "pollSeconds": 0.2},
            "deadLetter": {"maxDeliveries": 3, "idleSeconds": 60},
        })  # fmt: skip
    # The operator's own URL carries the password too (and points nowhere).
    own = f"redis://streamscale-operator:{password}@127.0.0.1:{free_port()}/0"
    async with h.running_operator(kmock, h.settings(own)):
        await h.eventually(lambda: h.condition(kmock, "good", "Ready") == "True", 20)
        await h.eventually(lambda: h.events(kmock, "DeadLettered"), 20)
        for name in ("refused", "down"):
            await h.eventually(lambda n=name: h.condition(kmock, n, "Degraded") == "True", 20)
        await h.eventually(lambda: h.events(kmock, "RedisUnavailable"), 20)  # down
        await h.eventually(lambda: h.events(kmock, "RedisRefused"), 20)  # wrong password
    assert admin.xlen(STREAM + ":dlq") == 5 and ids
    sent = [json.dumps(request.data, default=str) for request in list(kmock)]
    stored = [json.dumps(h.obj(kmock, kind, name), default=str)
              for kind in (h.STC, h.DEPLOYMENTS) for name in urls]  # fmt: skip
    messages = [str(h.status(kmock, n)) for n in ("refused", "down")]
    assert any("AuthenticationError" in m for m in messages), messages
    assert any("Connection refused" in m or "ConnectionError" in m for m in messages), messages
    assert "Redis unreachable" in caplog.text and any("Degraded" in t for t in sent)
    for where, text in (("API requests", "\n".join(sent)), ("objects", "\n".join(stored)),
                        ("logs", caplog.text)):  # fmt: skip
        assert password not in text, f"the password is in the operator's {where}"
