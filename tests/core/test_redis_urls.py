"""Sentinel and Cluster URLs: what they are read as, what is refused, and no password shown."""

from __future__ import annotations

import logging

import pydantic
import pytest
from redis.asyncio.cluster import RedisCluster

from streamscale.consumer.settings import ConsumerSettings
from streamscale.core import redis_urls
from streamscale.core.deadletter import (
    cluster_names_problem,
    cluster_problem,
    counter_key,
    hash_tag,
)
from streamscale.core.streams import SentinelMaster, connect, is_cluster, same_slot
from streamscale.operator.deployment import has_password
from streamscale.operator.settings import OperatorSettings

PASSWORD = "s3cret-never-shown"
SENTINEL_PASSWORD = "sentinel-s3cret"


def test_a_sentinel_url_names_sentinels_master_db_and_both_credentials() -> None:
    target = redis_urls.parse(
        f"rediss+sentinel://app:{PASSWORD}@s1:26380,s2,[::1]:26381/streams/2"
        f"?sentinel_password={SENTINEL_PASSWORD}&ssl_cert_reqs=none&socket_timeout=3"
    )
    assert target.kind == "sentinel" and target.master_name == "streams"
    assert target.hosts == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert target.options == {
        "username": "app", "password": PASSWORD, "db": 2, "ssl": True,
        "ssl_cert_reqs": "none", "socket_timeout": 3.0,
    }  # fmt: skip
    # The sentinels get their own password, TLS and timeouts, never the master's credentials.
    assert target.sentinel_options == {
        "password": SENTINEL_PASSWORD, "ssl": True, "ssl_cert_reqs": "none", "socket_timeout": 3.0,
    }  # fmt: skip


def test_a_cluster_url_names_seed_nodes_and_the_users_credentials() -> None:
    target = redis_urls.parse(f"redis+cluster://app:{PASSWORD}@n1:7000,n2:7001,n3")
    assert target.kind == "cluster"
    assert target.hosts == (("n1", 7000), ("n2", 7001), ("n3", 6379))
    assert target.options == {"username": "app", "password": PASSWORD}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"redis+sentinel://u:{PASSWORD}@s1:26379", "names the master"),
        (f"redis+sentinel://u:{PASSWORD}/x@s1:26379,s2:x/m", "not a port number"),
        (f"redis+cluster://u:{PASSWORD}@n1:7000/3", "only database 0"),
        (f"redis+cluster://n1:7000?sentinel_password={PASSWORD}", "belong in redis"),
        (f"redis+cluster://u:{PASSWORD}@,n1", "is empty"),
    ],
)
def test_bad_multi_host_urls_are_refused_without_quoting_them(url: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected) as info:
        redis_urls.parse(url)
    assert PASSWORD not in str(info.value)
    with pytest.raises(pydantic.ValidationError) as refused:
        ConsumerSettings(redis_url=url)
    assert expected in str(refused.value) and PASSWORD not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379,s2:26379/streams/0",
        "rediss+sentinel://s1/streams",
        "redis+cluster://n1:7000,n2:7000",
        "rediss+cluster://n1:7000",
    ],
)
def test_every_setting_accepts_sentinel_and_cluster_urls(url: str) -> None:
    assert ConsumerSettings(redis_url=url).redis_url.get_secret_value() == url
    operator_url = OperatorSettings(redis_url=url).redis_url
    assert operator_url is not None and operator_url.get_secret_value() == url


@pytest.mark.parametrize(
    ("url", "shown", "credentials"),
    [
        (f"redis://u:{PASSWORD}@h:6379/0", "redis://u:***@h:6379/0", True),
        ("redis://h:6379/0", "redis://h:6379/0", False),
        (
            f"redis+sentinel://u:{PASSWORD}@s1:1,s2:2/m/0?sentinel_password={SENTINEL_PASSWORD}",
            "redis+sentinel://u:***@s1:1,s2:2/m/0?sentinel_password=***",
            True,
        ),
        (
            f"redis+sentinel://s1:1/m?sentinel_password={SENTINEL_PASSWORD}",
            "redis+sentinel://s1:1/m?sentinel_password=***",
            True,
        ),
        (f"redis://h:6379/0?password={PASSWORD}", "redis://h:6379/0?password=***", True),
        ("redis+cluster://n1:1,n2:2", "redis+cluster://n1:1,n2:2", False),
    ],
)
def test_passwords_are_redacted_and_urls_with_any_are_kept_out_of_deployments(
    url: str, shown: str, credentials: bool
) -> None:
    assert redis_urls.redacted(url) == shown
    assert has_password(url) is credentials


async def test_connect_builds_a_sentinel_master_or_a_cluster_client_without_connecting() -> None:
    master = connect(f"redis+sentinel://u:{PASSWORD}@127.0.0.1:1,127.0.0.1:2/streams/1")
    try:
        assert isinstance(master, SentinelMaster) and not is_cluster(master)
        assert PASSWORD not in repr(master)
    finally:
        await master.aclose()
    cluster = connect(f"redis+cluster://u:{PASSWORD}@127.0.0.1:1")
    try:
        assert isinstance(cluster, RedisCluster) and is_cluster(cluster)
        assert PASSWORD not in repr(cluster)
    finally:
        await cluster.aclose()


def test_hash_tags_and_the_names_to_use_on_cluster(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert hash_tag("{orders}:dlq") == "orders" and hash_tag("orders") is None
    assert hash_tag("a{}b{c}") is None  # Redis hashes the whole key: the first tag is empty
    # The default dead-letter stream of a tagged stream shares its slot, counter included.
    stream = "{orders}"
    dlq = stream + ":dlq"
    assert same_slot(stream, dlq, counter_key(dlq, stream, "writers"))
    assert cluster_names_problem(stream, dlq, "writers") is None
    # An untagged stream's default does not: both names must change.
    problem = cluster_names_problem("orders", "orders:dlq", "writers")
    assert problem is not None
    assert "stream '{orders}' and dead-letter stream '{orders}:dlq'" in problem
    # A tagged stream with a dead-letter stream of its own naming: only that one changes.
    problem = cluster_names_problem("{orders}", "dead-letters", "writers")
    assert problem is not None and "use dead-letter stream '{orders}:dlq'" in problem


def test_several_streams_on_cluster_may_spread_over_slots_each_with_its_own_names() -> None:
    """The consumer reads each slot's streams on their own (the shards of a logical stream are
    in different slots on purpose); only each stream's own names must share its slot."""

    def default(stream: str) -> str:
        return stream + ":dlq"

    assert cluster_problem(["{orders}:eu", "{orders}:us"], default, "writers") is None
    assert cluster_problem(["{orders}:eu", "{refunds}"], default, "writers") is None
    assert cluster_problem(["{orders:0}", "{orders:1}", "{orders:2}"], default, "w") is None
    problem = cluster_problem(["orders", "{refunds}"], default, "writers")
    assert problem is not None and "'{orders}:dlq'" in problem and "'{refunds}" not in problem
