"""The operator's plain parts without Kubernetes: the CRD, specs, the Deployment, conditions."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml
from redis import exceptions as redis_exceptions

from streamscale.core.streams import PendingEntry
from streamscale.operator import constants as c
from streamscale.operator import redis_failures
from streamscale.operator.deployment import build_deployment, consumer_env
from streamscale.operator.reclaiming import Rules, owner_pod, verdict
from streamscale.operator.specs import SpecError, model_conflict, parse
from streamscale.operator.status import Condition, merge_conditions
from tests.support import kube as h

EXAMPLE = h.ROOT / "examples" / "streamconsumer.yaml"


def schema() -> dict[str, Any]:
    crd = h.load_crd()
    (version,) = crd["spec"]["versions"]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def example() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return loaded


def test_the_crd_loads_from_the_chart() -> None:
    crd = h.load_crd()
    assert crd["metadata"]["name"] == "streamconsumers.streamscale.io" == c.CRD_NAME
    spec = crd["spec"]
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == [c.SHORT_NAME]
    (version,) = spec["versions"]
    assert version["name"] == c.VERSION and version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == [
        "Stream", "Streams", "Group", "Replicas", "Desired", "Lag", "Pending", "Dead-lettered",
        "Age", "Arrival/s", "Drain-s",
    ]  # fmt: skip
    scaling = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["scaling"]
    rules = [rule["rule"] for rule in scaling["x-kubernetes-validations"]]
    assert any(rule.endswith("self.minReplicas <= self.maxReplicas") for rule in rules)
    optional = {"targetDrainSeconds", "replicaThroughput"}  # drainTime mode only: no default
    for name, field in scaling["properties"].items():
        assert field.get("description"), name
        assert ("default" in field) != (name in optional), name


def test_the_example_validates_against_the_schema() -> None:
    jsonschema.validate(example(), schema())
    parsed = parse("default", "products", example()["spec"])
    assert parsed.retention is not None and parsed.retention.max_age_seconds == 86400


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "stream"), None),
        (("spec", "streams"), []),
        (("spec", "streams"), ["a,b"]),
        (("spec", "scaling", "minReplicas"), -1),
        (("spec", "scaling", "maxReplicas"), 0),
        (("spec", "scaling", "backlogPerReplica"), 0),
        (("spec", "deadLetter", "maxDeliveries"), 0),
        (("spec", "redis", "url"), "http://nope"),
        (("spec", "model"), "not a path"),
    ],
)
def test_the_schema_rejects_bad_values(path: tuple[str, ...], value: object) -> None:
    doc = copy.deepcopy(example())
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema())


def test_parse_fills_the_defaults_and_refuses_contradictions() -> None:
    parsed = parse("ns", "x", {"stream": "s", "group": "g", "database": h.DATABASE})
    assert parsed.policy.max_replicas == 10 and parsed.poll_seconds == 5
    assert parsed.dead_letter_for("s") == "s:dlq" and parsed.max_deliveries == 5
    assert parsed.streams == ("s",) and parsed.stream == "s"
    assert parsed.deployment_name == "x"
    with pytest.raises(SpecError, match="minReplicas"):
        parse(
            "ns",
            "x",
            {
                "stream": "s",
                "group": "g",
                "database": h.DATABASE,
                "scaling": {"minReplicas": 3, "maxReplicas": 2},
            },
        )
    with pytest.raises(SpecError, match="not both"):
        parse(
            "ns",
            "x",
            {"stream": "s", "group": "g", "database": h.DATABASE, "model": "a:B", "handler": "a:f"},
        )
    target = parse(
        "ns",
        "x",
        {"stream": "s", "group": "g", "database": h.DATABASE, "scaleTargetRef": {"name": "mine"}},
    )
    assert target.deployment_name == "mine"


def deployment(spec: dict[str, Any], redis_url: str = "redis://redis:6379/0") -> dict[str, Any]:
    owner = h.stream_consumer("orders", spec)
    return build_deployment(
        parse("ns1", "orders", spec),
        owner,
        replicas=0,
        default_image="streamscale:default",
        default_redis_url=redis_url,
    )


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item for item in container["env"]}


def test_the_deployment_is_owned_labelled_probed_and_restricted() -> None:
    manifest = deployment(
        {
            "stream": "orders",
            "group": "writers",
            "model": "app.models:Order",
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "database": {"urlSecretRef": {"name": "pg", "key": "url"}},
            "consumer": {"env": [{"name": "STREAMSCALE_STREAM", "value": "other"},
                                 {"name": "EXTRA", "value": "1"}]},
        }
    )  # fmt: skip
    meta = manifest["metadata"]
    assert meta["name"] == "orders"
    assert meta["labels"][c.LABEL_NAME] == "streamscale-consumer"
    assert meta["labels"][c.LABEL_INSTANCE] == "orders"
    (owner,) = meta["ownerReferences"]
    assert owner["kind"] == "StreamConsumer" and owner["controller"] is True and owner["uid"]
    pod = manifest["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 30
    assert pod["spec"]["automountServiceAccountToken"] is False, "consumers never call the API"
    (tmp,) = pod["spec"]["volumes"]
    assert tmp == {"name": "tmp", "emptyDir": {"sizeLimit": "128Mi"}}
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "streamscale:default"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = env_of(manifest)
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["STREAMSCALE_STREAM"] == {"name": "STREAMSCALE_STREAM", "value": "orders"}
    assert env["STREAMSCALE_GROUP"]["value"] == "writers"
    assert env["STREAMSCALE_MODEL"]["value"] == "app.models:Order"
    assert env["STREAMSCALE_DEAD_LETTER_STREAM"]["value"] == "orders:dlq"
    assert env["STREAMSCALE_MAX_DELIVERIES"]["value"] == "5"
    assert env["STREAMSCALE_NAMESPACE"]["value"] == "ns1"
    assert env["STREAMSCALE_NAME"]["value"] == "orders"
    assert env["STREAMSCALE_REDIS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis", "key": "url"}
    }
    assert env["STREAMSCALE_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "pg", "key": "url"}
    }
    assert env["EXTRA"]["value"] == "1"


def test_secrets_never_go_into_the_deployment_as_values() -> None:
    with pytest.raises(SpecError, match="urlSecretRef"):
        deployment(
            {
                "stream": "s",
                "group": "g",
                "database": h.DATABASE,
                "redis": {"url": "redis://:secret@r:6379/0"},
            }
        )
    with pytest.raises(SpecError, match="urlSecretRef"):
        deployment(
            {"stream": "s", "group": "g", "database": h.DATABASE},
            redis_url="redis://user:pw@r:6379/0",
        )
    plain = env_of(deployment({"stream": "s", "group": "g", "database": h.DATABASE}))
    assert plain["STREAMSCALE_REDIS_URL"]["value"] == "redis://redis:6379/0"


def test_conditions_keep_their_transition_time_until_they_flip() -> None:
    first = merge_conditions(None, [Condition("Ready", True, "Polled")], "t1")
    same = merge_conditions(first, [Condition("Ready", True, "Polled", "again")], "t2")
    flipped = merge_conditions(same, [Condition("Ready", False, "RedisUnavailable")], "t3")
    assert first[0]["lastTransitionTime"] == same[0]["lastTransitionTime"] == "t1"
    assert flipped[0] == {
        "type": "Ready",
        "status": "False",
        "reason": "RedisUnavailable",
        "message": "",
        "lastTransitionTime": "t3",
    }


def entry(consumer: str, idle_ms: int, deliveries: int = 1) -> PendingEntry:
    return PendingEntry("1-0", consumer, idle_ms, deliveries)


def test_consumers_belong_to_pods_by_name_or_numbered_suffix() -> None:
    pods = {"orders-7d9-abcde"}
    assert owner_pod("orders-7d9-abcde", pods) == "orders-7d9-abcde"
    assert owner_pod("orders-7d9-abcde-2", pods) == "orders-7d9-abcde"
    assert owner_pod("orders-7d9-fghij", pods) is None
    assert owner_pod("orders-7d9-abcde-x", pods) is None


def test_the_verdict_never_takes_a_fresh_entry() -> None:
    rules = Rules(max_deliveries=5, idle_ms=300_000, min_idle_ms=5_000)
    assert verdict(entry("c", 1_000, deliveries=9), gone=True, rules=rules) is None
    # A gone consumer's entry waits for live consumers to claim it first (they do at 30 s):
    # by default it follows idleSeconds like any entry.
    assert verdict(entry("c", 6_000), gone=True, rules=rules) is None
    assert verdict(entry("c", 299_000), gone=True, rules=rules) is None
    assert verdict(entry("c", 300_000), gone=True, rules=rules) == "idle"
    sooner = Rules(max_deliveries=5, idle_ms=300_000, min_idle_ms=5_000, gone_idle_ms=60_000)
    assert verdict(entry("c", 60_000), gone=True, rules=sooner) == "idle"
    assert verdict(entry("c", 60_000), gone=False, rules=sooner) is None
    assert verdict(entry("c", 6_000, deliveries=5), gone=False, rules=rules) == "max-deliveries"
    assert verdict(entry("c", 300_000), gone=False, rules=rules) == "idle"


def test_table_mode_without_a_database_is_refused_with_what_to_do() -> None:
    with pytest.raises(SpecError, match=r"spec\.database\.urlSecretRef.*lost at the next scale-in"):
        parse("ns", "x", {"stream": "s", "group": "g", "model": "a:B"})
    with pytest.raises(SpecError, match=r"spec\.database"):
        parse("ns", "x", {"stream": "s", "group": "g"})
    handler = parse("ns", "x", {"stream": "s", "group": "g", "handler": "a:f"})
    assert handler.database_secret is None


def test_the_older_stream_consumer_keeps_a_model_table() -> None:
    def body(name: str, stream: str, created: str, **extra: Any) -> dict[str, Any]:
        raw = {"stream": stream, "group": "g", "database": h.DATABASE, "model": "m:T", **extra}
        obj = h.stream_consumer(name, raw)
        obj["metadata"]["creationTimestamp"] = created
        return obj

    old = body("a", "s1", "2026-01-01T00:00:00Z")
    new = body("b", "s2", "2026-01-02T00:00:00Z")
    same_stream = body("c", "s1", "2026-01-02T00:00:00Z")
    other_db = body("d", "s3", "2026-01-02T00:00:00Z")
    other_db["spec"]["database"] = {"urlSecretRef": {"name": "pg2", "key": "url"}}
    everyone = [old, new, same_stream, other_db]

    def conflict(obj: dict[str, Any]) -> str | None:
        meta = obj["metadata"]
        parsed = parse(
            "ns1", meta["name"], obj["spec"], creation_timestamp=meta["creationTimestamp"]
        )
        found = model_conflict(parsed, everyone)
        return None if found is None else str(found)

    assert conflict(old) is None, "the oldest keeps the table"
    assert "StreamConsumer a" in (conflict(new) or "")
    assert conflict(same_stream) is None, "several groups of one stream may share a table"
    assert conflict(other_db) is None, "another database is another table"


def test_redis_failures_tell_unreachable_from_refused() -> None:
    unreachable = [
        redis_exceptions.ConnectionError(
            "Error 111 connecting to 127.0.0.1:1. Connection refused."
        ),
        redis_exceptions.TimeoutError("Timeout reading from socket"),
        redis_exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        OSError("Network is unreachable"),
    ]
    for exc in unreachable:
        failure = redis_failures.classify(exc)
        assert failure.reason == "RedisUnavailable", exc
        assert failure.message.startswith("Redis unreachable")
    refused = [
        redis_exceptions.NoPermissionError("NOPERM User op has no permissions to run 'xinfo'"),
        redis_exceptions.AuthenticationError("WRONGPASS invalid username-password pair"),
        redis_exceptions.ResponseError("WRONGTYPE Operation against a key of the wrong kind"),
    ]
    for exc in refused:
        failure = redis_failures.classify(exc)
        assert failure.reason == "RedisRefused", exc
        assert failure.message.startswith("Redis refused")
    assert "ACL" in redis_failures.classify(refused[0]).message


def test_several_streams_parse_into_one_spec_and_contradictions_are_refused() -> None:
    base = {"group": "g", "database": h.DATABASE}
    parsed = parse("ns", "x", {**base, "streams": ["orders", "payments"]})
    assert parsed.streams == ("orders", "payments") and parsed.stream == "orders,payments"
    assert [parsed.dead_letter_for(s) for s in parsed.streams] == ["orders:dlq", "payments:dlq"]
    env = {e["name"]: e.get("value") for e in consumer_env(parsed, "redis://r:6379/0")}
    assert env["STREAMSCALE_STREAM"] == "orders,payments"
    assert "STREAMSCALE_DEAD_LETTER_STREAM" not in env
    for bad, match in (
        ({"stream": "a", "streams": ["b"]}, "exactly one"),
        ({}, "exactly one"),
        ({"streams": ["a", "a"]}, "twice"),
        ({"streams": ["a,b"]}, "comma"),
        ({"streams": ["a", "b"], "deadLetter": {"stream": "all:dlq"}}, "own `<stream>:dlq`"),
    ):
        with pytest.raises(SpecError, match=match):
            parse("ns", "x", {**base, **bad})
    single = parse("ns", "x", {**base, "stream": "a", "deadLetter": {"stream": "dead"}})
    env = {e["name"]: e.get("value") for e in consumer_env(single, "redis://r:6379/0")}
    assert env["STREAMSCALE_DEAD_LETTER_STREAM"] == "dead" and env["STREAMSCALE_STREAM"] == "a"
