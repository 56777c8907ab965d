"""The `streamscale` CLI driven as a user drives it: a subprocess against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from streamscale.cli import replaying, snapshots
from streamscale.core import constants
from streamscale.core.deadletter import DeadLetter, Scripts
from streamscale.core.shards import shard_for, shard_streams
from streamscale.core.streams import as_str
from tests.support.servers import RedisServer, free_port

STREAMSCALE = str(Path(sys.executable).parent / "streamscale")
REPO = Path(__file__).resolve().parents[2]


def cli(
    *args: str,
    redis_url: str | None = None,
    stdin: str | None = None,
    timeout: float = 60,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCALE_")}
    if redis_url:
        env["STREAMSCALE_REDIS_URL"] = redis_url
    env.update(extra_env or {})
    return subprocess.run(
        [STREAMSCALE, *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


async def dead_letter(
    redis: aioredis.Redis, stream: str, reasons: list[str], group: str = "g"
) -> list[str]:
    """Entries dead-lettered through the consumer's own atomic script; their dead-letter IDs."""
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    for n in range(len(reasons)):
        await redis.xadd(stream, {"data": orjson.dumps({"n": n})})
    read = await redis.xreadgroup(group, "worker-1", {stream: ">"}, count=len(reasons))
    ids = [as_str(entry_id) for entry_id, _fields in read[0][1]]
    await Scripts(redis).dead_letter(
        stream,
        stream + constants.DEAD_LETTER_SUFFIX,
        group,
        [DeadLetter(i, r, f"because {r}") for i, r in zip(ids, reasons, strict=True)],
    )
    return [as_str(e[0]) for e in await redis.xrange(stream + constants.DEAD_LETTER_SUFFIX)]


async def test_produce_stream_mode_writes_product_payloads(redis_server: RedisServer, redis, names):
    stream = names("products")
    summary = json.loads(
        ok(cli("produce", "--stream", stream, "-c", "40", "--json", redis_url=redis_server.url))
    )
    assert summary["produced"] == 40 and summary["poison"] == 0 and summary["length"] == 40
    entries = await redis.xrange(stream)
    payloads = [orjson.loads(fields[b"data"]) for _id, fields in entries]
    assert [p["sku"] for p in payloads] == [f"SKU-{n:08d}" for n in range(40)]
    assert set(payloads[0]) == {"sku", "name", "price", "url", "created_at"}
    assert payloads[0]["created_at"].endswith("+00:00")  # ISO 8601 with the offset


async def test_produce_bulk_mode_template_poison_and_maxlen(redis_server, redis, names):
    stream = names("bulk")
    template = '{"order": "{n}", "ref": "o-{n}-{uuid}", "at": "{now}", "tags": ["{n}"]}'
    out = ok(
        cli(
            "produce",
            "--stream",
            stream,
            "-c",
            "1000",
            "--mode",
            "bulk",
            "--pipeline",
            "128",
            "--template",
            template,
            "--poison-ratio",
            "0.2",
            "--seed",
            "7",
            "--no-progress",
            redis_url=redis_server.url,
        )
    )
    assert "produced 1000 entries" in out and "bulk mode" in out
    entries = await redis.xrange(stream)
    assert len(entries) == 1000
    poison = [f for _id, f in entries if f[b"data"].startswith(b"not json")]
    good = [orjson.loads(f[b"data"]) for _id, f in entries if not f[b"data"].startswith(b"not")]
    assert f"({len(poison)} poison)" in out
    assert 120 < len(poison) < 280
    assert all(isinstance(p["order"], int) and p["tags"] == [p["order"]] for p in good)
    assert good[0]["ref"].startswith(f"o-{good[0]['order']}-")

    trimmed = names("trimmed")
    ok(cli("produce", "--stream", trimmed, "-c", "3000", "--mode", "bulk", "--maxlen", "500",
           "--no-progress", redis_url=redis_server.url))  # fmt: skip
    assert await redis.xlen(trimmed) < 1500  # MAXLEN ~ trims whole nodes, approximately


def test_produce_rate_paces_the_run(redis_server, names):
    summary = json.loads(
        ok(
            cli(
                "produce",
                "--stream",
                names("slow"),
                "-c",
                "21",
                "--rate",
                "40",
                "--json",
                redis_url=redis_server.url,
            )
        )
    )
    assert summary["seconds"] >= 0.45  # 21 entries at 40/s: the last one at 0.5 s


async def test_status_once_shows_lag_pending_consumers_and_dead_letters(redis_server, redis, names):
    stream = names("orders")
    await dead_letter(redis, stream, ["invalid", "max-deliveries"])
    for n in range(10):
        await redis.xadd(stream, {"data": orjson.dumps({"n": n})})
    await redis.xreadgroup("g", "worker-2", {stream: ">"}, count=3)  # 3 pending, 7 unread

    doc = json.loads(ok(cli("status", "--once", "--json", "--stream", stream, "--interval", "0",
                            redis_url=redis_server.url)))  # fmt: skip
    [row] = doc["streams"]
    assert row["stream"] == stream and row["length"] == 12
    assert row["dead_letter_length"] == 2
    [group] = row["groups"]
    assert group["name"] == "g" and group["lag"] == 7 and group["lag_source"] == "xinfo"
    assert group["pending"] == 3
    consumers = {co["name"]: co["pending"] for co in group["consumers"]}
    assert consumers == {"worker-1": 0, "worker-2": 3}

    text = ok(cli("status", "--once", "--stream", stream, "--interval", "0",
                  redis_url=redis_server.url))  # fmt: skip
    assert stream in text and "worker-2" in text and "dead letters" in text


async def test_status_marks_a_null_lag_as_estimated(redis_server, redis, names):
    stream = names("holes")
    ids = [await redis.xadd(stream, {"n": str(n)}) for n in range(6)]
    await redis.xgroup_create(stream, "g", id="0")
    await redis.xreadgroup("g", "w", {stream: ">"}, count=1)
    await redis.xdel(stream, ids[3])  # a hole among the unread entries: XINFO says lag NULL

    doc = json.loads(ok(cli("status", "--once", "--json", "--stream", stream, "--interval", "0",
                            redis_url=redis_server.url)))  # fmt: skip
    group = doc["streams"][0]["groups"][0]
    assert group["lag"] == 4 and group["lag_source"] == "estimate" and group["lag_exact"]
    text = ok(cli("status", "--once", "--stream", stream, "--interval", "0",
                  redis_url=redis_server.url))  # fmt: skip
    assert "4*" in text and "lag is NULL" in text


async def test_status_throughput_is_entries_read_per_second(redis, names):
    stream = names("rate")
    for n in range(50):
        await redis.xadd(stream, {"n": str(n)})
    await redis.xgroup_create(stream, "g", id="0")
    first = await snapshots.collect(redis, [stream])
    await redis.xreadgroup("g", "w", {stream: ">"}, count=40)
    await asyncio.sleep(0.2)
    second = await snapshots.collect(redis, [stream], first)
    rate = second.streams[0].groups[0].throughput
    assert rate is not None and 40 / 0.5 < rate <= 40 / 0.2


async def test_dlq_list_show_filter_by_reason(redis_server, redis, names):
    stream = names("orders")
    dl_ids = await dead_letter(redis, stream, ["invalid", "max-deliveries", "invalid"])

    doc = json.loads(ok(cli("dlq", "list", "--stream", stream, "--reason", "invalid", "--json",
                            redis_url=redis_server.url)))  # fmt: skip
    assert doc["length"] == 3
    assert [e["id"] for e in doc["entries"]] == [dl_ids[0], dl_ids[2]]
    assert doc["entries"][0]["fields"]["x-error"] == "because invalid"

    text = ok(cli("dlq", "list", "--stream", stream, redis_url=redis_server.url))
    assert "max-deliveries" in text and dl_ids[1] in text

    shown = ok(cli("dlq", "show", dl_ids[1], "--stream", stream, redis_url=redis_server.url))
    assert "x-reason: max-deliveries" in shown and "x-consumer: worker-1" in shown

    missing = cli("dlq", "show", "1-1", "--stream", stream, redis_url=redis_server.url)
    assert missing.returncode == 1 and "no entry 1-1" in missing.stderr


async def test_dlq_replay_once_and_never_twice(redis_server, redis, names):
    stream = names("orders")
    dl_ids = await dead_letter(redis, stream, ["invalid", "max-deliveries"])
    before = await redis.xlen(stream)

    out = ok(cli("dlq", "replay", dl_ids[0], "--stream", stream, redis_url=redis_server.url))
    assert f"{dl_ids[0]} -> {stream}" in out and "replayed 1 of 1" in out
    again = cli("dlq", "replay", dl_ids[0], "--stream", stream, redis_url=redis_server.url)
    assert again.returncode == 1 and "already replayed as" in again.stdout

    assert await redis.xlen(stream) == before + 1
    new_id, fields = (await redis.xrevrange(stream, count=1))[0]
    # The original fields come back, without the x-* dead-letter fields, pointing to where
    # they came from.
    assert fields == {b"data": b'{"n":0}', constants.X_REPLAYED_FROM.encode(): dl_ids[0].encode()}
    assert [as_str(e[0]) for e in await redis.xrange(stream + ":dlq")] == [dl_ids[1]]
    assert new_id.decode() in again.stdout


async def test_concurrent_replays_replay_each_entry_exactly_once(redis, names):
    stream = names("orders")
    dl_ids = await dead_letter(redis, stream, ["invalid"] * 30)
    before = await redis.xlen(stream)
    dlq = stream + ":dlq"
    runs = await asyncio.gather(
        *(replaying.replay(redis, dlq, dl_ids[::step]) for step in (1, 1, 2, 3))
    )
    replayed = [o.id for run in runs for o in run if o.status == replaying.STATUS_REPLAYED]
    assert sorted(replayed) == sorted(dl_ids)
    assert await redis.xlen(stream) == before + 30
    assert await redis.xlen(dlq) == 0


async def test_dlq_replay_all_by_reason_and_purge(redis_server, redis, names):
    stream = names("orders")
    await dead_letter(redis, stream, ["invalid", "max-deliveries", "invalid", "idle"])
    out = ok(cli("dlq", "replay", "--all", "--reason", "invalid", "--stream", stream,
                 redis_url=redis_server.url))  # fmt: skip
    assert "replayed 2 of 2" in out
    assert await redis.xlen(stream + ":dlq") == 2

    refused = cli("dlq", "purge", "--all", "--stream", stream, redis_url=redis_server.url)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert await redis.xlen(stream + ":dlq") == 2

    out = ok(cli("dlq", "purge", "--all", "--reason", "idle", "--yes", "--stream", stream,
                 redis_url=redis_server.url))  # fmt: skip
    assert "purged 1 entries" in out
    out = ok(cli("dlq", "purge", "--all", "--yes", "--stream", stream, redis_url=redis_server.url))
    assert "purged 1 entries" in out
    assert await redis.xlen(stream + ":dlq") == 0


def test_unreachable_redis_says_what_to_do_without_a_traceback():
    url = f"redis://127.0.0.1:{free_port()}/0"
    for args in (["produce", "-c", "1"], ["status", "--once"], ["dlq", "list"]):
        result = cli(*args, redis_url=url)
        assert result.returncode == 1, args
        assert "cannot reach Redis at" in result.stderr and "--redis-url" in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_input_is_explained():
    for url in ("http://nope", "notaurl"):
        bad_url = cli("produce", "--redis-url", url)
        assert bad_url.returncode == 2 and "not a Redis URL" in bad_url.stderr, bad_url.stderr
        assert "Traceback" not in bad_url.stderr

    bad_count = cli("produce", "--count", "many")
    assert bad_count.returncode == 2 and "'many' is not a valid integer" in bad_count.stderr

    bad_template = cli("produce", "--template", "{oops")
    assert bad_template.returncode == 1 and "--template is not valid JSON" in bad_template.stderr

    for handler, text in [
        ("not_a_module_xyz:handle", "cannot import module 'not_a_module_xyz'"),
        ("examples.ai_service:nope", "has no attribute 'nope'"),
        ("no-colon", "not an import path"),
    ]:
        result = cli("consume", "--handler", handler)
        assert result.returncode == 2 and text in result.stderr, result.stderr
        assert "Traceback" not in result.stderr

    bad_setting = cli("consume", "--batch-size", "0")
    assert bad_setting.returncode == 2
    assert "STREAMSCALE_BATCH_SIZE / --batch-size" in bad_setting.stderr

    loud = cli("consume", "--log-level", "LOUD")
    assert loud.returncode == 2 and "not a log level" in loud.stderr, loud.stderr
    assert "Traceback" not in loud.stderr

    both = cli("dlq", "replay", "1-0", "--all")
    assert both.returncode == 2 and "not both" in both.stderr

    no_scope = cli("operate")
    assert no_scope.returncode == 2 and "--all-namespaces" in no_scope.stderr


def test_help_lists_every_command_of_the_design():
    out = ok(cli("--help"))
    for command in ("consume", "operate", "produce", "status", "dlq", "demo", "bench"):
        assert f"  {command} " in out
    dlq_help = ok(cli("dlq", "--help"))
    for sub in ("list", "show", "replay", "purge"):
        assert f"  {sub} " in dlq_help


async def test_status_live_view_refreshes_until_ctrl_c(redis_server, redis, names):
    stream = names("live")
    await redis.xadd(stream, {"n": "1"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCALE_")}
    proc = subprocess.Popen(
        [STREAMSCALE, "status", "--stream", stream, "--interval", "0.2",
         "--redis-url", redis_server.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        await asyncio.sleep(2.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert stream in out and "Traceback" not in err


async def test_dlq_replay_to_another_stream(redis_server, redis, names):
    stream, other = names("orders"), names("orders-retry")
    [dl_id] = await dead_letter(redis, stream, ["max-deliveries"])
    out = ok(cli("dlq", "replay", dl_id, "--stream", stream, "--to", other, "--json",
                 redis_url=redis_server.url))  # fmt: skip
    [outcome] = json.loads(out)
    assert outcome["status"] == "replayed" and outcome["stream"] == other
    [(_id, fields)] = await redis.xrange(other)
    assert fields == {b"data": b'{"n":0}', b"x-replayed-from": dl_id.encode()}


def test_redis_commands_read_the_consumers_settings_sources(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "streamscale_redis_url").write_text(redis_server.url + "\n")
    from_file = {"STREAMSCALE_SECRETS_DIR": str(secrets)}
    for args in (["produce", "-c", "3", "--no-progress"], ["status", "--once"], ["dlq", "list"]):
        ok(cli(*args, extra_env=from_file))

    missing = {"STREAMSCALE_SECRETS_DIR": str(tmp_path / "not-mounted")}
    for args in (["status", "--once"], ["consume"]):
        result = cli(*args, extra_env=missing)
        assert result.returncode == 2, result.stderr
        assert "STREAMSCALE_SECRETS_DIR" in result.stderr and "not a directory" in result.stderr
        assert "Traceback" not in result.stderr


def test_redis_answers_and_bad_names_are_one_message_never_a_traceback(
    redis_server: RedisServer,
) -> None:
    plain = __import__("redis").Redis.from_url(redis_server.url)
    try:
        plain.set("a-string", "x")
    finally:
        plain.close()
    url = redis_server.url
    wrong_type = cli("produce", "-c", "5", "--mode", "bulk", "--no-progress",
                     "--stream", "a-string", redis_url=url)  # fmt: skip
    assert wrong_type.returncode == 1 and "is not a stream" in wrong_type.stderr, wrong_type.stderr
    assert "name a stream with --stream" in wrong_type.stderr

    no_such_db = cli("status", "--once", redis_url=url.rsplit("/", 1)[0] + "/99999")
    assert no_such_db.returncode == 2 and "names a database" in no_such_db.stderr, no_such_db.stderr

    with socket.socket() as not_redis:  # answers nothing Redis understands: an HTTP-like banner
        not_redis.bind(("127.0.0.1", 0))
        not_redis.listen()
        port = not_redis.getsockname()[1]
        server = threading.Thread(target=_answer_garbage, args=(not_redis,), daemon=True)
        server.start()
        other = cli("dlq", "list", redis_url=f"redis://127.0.0.1:{port}/0", timeout=30)
        server.join(10)
    assert other.returncode == 1 and "did not answer like Redis" in other.stderr, other.stderr

    for args in (["dlq", "show", "nope"], ["dlq", "replay", "12-x"], ["dlq", "purge", "1-2-3"]):
        bad_id = cli(*args, redis_url=url)
        assert bad_id.returncode == 2 and "is not a stream entry ID" in bad_id.stderr, args

    for args in (["produce", "-c", "1", "--stream", ""], ["status", "--once", "--stream", ""],
                 ["dlq", "list", "--stream", ""], ["consume", "--stream", ""]):  # fmt: skip
        empty = cli(*args, redis_url=url)
        assert empty.returncode == 2, (args, empty.stderr)

    for result in (wrong_type, no_such_db, other, bad_id, empty):
        assert "Traceback" not in result.stderr


def _answer_garbage(listener: socket.socket) -> None:
    listener.settimeout(20)
    connection, _address = listener.accept()
    with connection:
        connection.recv(1024)
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def _start_producing(url: str, stream: str) -> subprocess.Popen[str]:
    """A slow `produce` (rate-limited) that is still running when the test interrupts it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCALE_")}
    return subprocess.Popen(
        [STREAMSCALE, "produce", "--stream", stream, "-c", "100000", "--rate", "200",
         "--no-progress", "--redis-url", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_produce_ended_by_sigterm_prints_its_summary_and_exits_130(
    redis_server, redis, names
):
    stream = names("sigterm")
    proc = _start_producing(redis_server.url, stream)
    for _ in range(100):  # until it has produced something, at most 10 s
        if await redis.xlen(stream) > 0:
            break
        await asyncio.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = _finish(proc)
    assert proc.returncode == 130, err
    assert "interrupted after" in err and "Traceback" not in err
    produced = int(out.split("produced ", 1)[1].split(" ", 1)[0])
    assert produced == await redis.xlen(stream) > 0


async def test_produce_losing_redis_prints_what_was_added_and_fails(fresh_redis, names):
    stream = names("lost")
    proc = _start_producing(fresh_redis.url, stream)
    client = aioredis.Redis.from_url(fresh_redis.url)
    try:
        for _ in range(100):  # until it has produced something, at most 10 s
            if await client.xlen(stream) > 0:
                break
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    fresh_redis.kill()
    out, err = _finish(proc)
    assert proc.returncode == 1, err
    assert "produced " in out and "stream length unknown" in out, out
    assert "lost Redis after" in err and "Traceback" not in err


def test_operate_stops_with_one_message_when_it_cannot_run(tmp_path: Path) -> None:
    nowhere = {"HOME": str(tmp_path), "KUBECONFIG": ""}
    no_login = cli("operate", "-A", extra_env={**nowhere, "STREAMSCALE_HTTP_PORT": "0"},
                   timeout=30)  # fmt: skip
    assert no_login.returncode == 2, no_login.stderr
    assert "no Kubernetes credentials" in no_login.stderr and "KUBECONFIG" in no_login.stderr

    broken = tmp_path / "kubeconfig"
    broken.write_text("clusters: []\n")
    bad_login = cli("operate", "-A", extra_env={**nowhere, "KUBECONFIG": str(broken)}, timeout=30)
    assert bad_login.returncode == 2, bad_login.stderr
    assert "cannot read the Kubernetes credentials" in bad_login.stderr

    with socket.socket() as taken:  # a first operator (or anything else) on the HTTP port
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        kubeconfig = tmp_path / "kind"
        kubeconfig.write_text(
            "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
            "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:9'}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
        )
        port = str(taken.getsockname()[1])
        second_env = {"KUBECONFIG": str(kubeconfig), "STREAMSCALE_HTTP_PORT": port}
        second = cli("operate", "-A", timeout=30, extra_env=second_env)
    assert second.returncode == 2, second.stderr
    assert f":{port}" in second.stderr and "STREAMSCALE_HTTP_PORT" in second.stderr
    for result in (no_login, bad_login, second):
        assert "Traceback" not in result.stderr


def test_consume_has_one_option_per_consumer_setting_with_its_help_text():
    from streamscale.consumer.settings import ConsumerSettings  # noqa: PLC0415

    out = " ".join(ok(cli("consume", "--help")).split())
    for name, field in ConsumerSettings.model_fields.items():
        assert "--" + name.replace("_", "-") in out, name
        assert f"[env STREAMSCALE_{name.upper()}]" in out, name
        assert " ".join(str(field.description).split()) in out, name


async def test_produce_into_a_sharded_stream_routes_each_key_to_its_shard(
    redis_server: RedisServer, redis, names
) -> None:
    stream = names("sharded")
    template = '{"user": "{n}", "n": "{n}"}'
    summary = json.loads(
        ok(
            cli(
                "produce", "--stream", stream, "-c", "2000", "--mode", "bulk", "--shards", "4",
                "--key-field", "user", "--template", template, "--json", "--no-progress",
                redis_url=redis_server.url,
            )
        )
    )  # fmt: skip
    shards = shard_streams(stream, 4)
    assert summary["produced"] == summary["length"] == 2000
    assert summary["by_shard"] == {s: await redis.xlen(s) for s in shards}
    assert all(400 < n < 600 for n in summary["by_shard"].values())
    for index, shard in enumerate(shards):
        users = [orjson.loads(f[b"data"])["user"] for _id, f in await redis.xrange(shard)]
        assert all(shard_for(str(user), 4) == index for user in users)
    assert not await redis.exists(stream)
    bad = cli("produce", "--stream", stream, "--shards", "2", "--key-field", "nope",
              redis_url=redis_server.url)  # fmt: skip
    assert bad.returncode == 1 and "--key-field 'nope' is not a field" in bad.stderr


async def test_status_shows_a_sharded_stream_as_one_with_its_shards(
    redis_server: RedisServer, redis, names
) -> None:
    logical = names("sharded")
    shards = shard_streams(logical, 3)
    for index, shard in enumerate(shards):
        await redis.xgroup_create(shard, "g", id="0", mkstream=True)
        for n in range(10 * (index + 1)):
            await redis.xadd(shard, {"n": str(n)})
        await redis.xreadgroup("g", "c", {shard: ">"}, count=index + 1)
    args = [a for s in shards for a in ("--stream", s)]
    doc = json.loads(ok(cli("status", *args, "--once", "--json", redis_url=redis_server.url)))
    (total,) = doc["logical_streams"]
    assert total["stream"] == logical and total["shards"] == 3 and total["length"] == 60
    (group,) = total["groups"]
    assert group["name"] == "g" and group["pending"] == 6 and group["lag"] == 54
    table = ok(cli("status", *args, "--once", redis_url=redis_server.url))
    assert f"{logical} (3 shards)" in table.replace("\n", "")
