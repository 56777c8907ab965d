"""Contracts between the operator and its neighbours: the consumer's settings and the CRD."""

from __future__ import annotations

from typing import Any

import pytest

from streamscale.consumer.settings import ConsumerSettings
from streamscale.operator.deployment import build_deployment
from streamscale.operator.specs import ConsumerSpec, parse
from tests.support import kube as h

PREFIX = "STREAMSCALE_"

SPECS = {
    "table, secrets": {
        "model": "app.models:Order",
        "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
        "database": h.DATABASE,
    },
    "handler, plain url": {"handler": "app.handlers:handle", "redis": {"url": "redis://r:6379/0"}},
    "operator's redis": {"database": h.DATABASE},
}


@pytest.mark.parametrize("extra", SPECS.values(), ids=list(SPECS))
def test_every_variable_the_operator_writes_is_a_consumer_setting(extra: dict[str, Any]) -> None:
    spec = {"stream": "orders", "group": "writers", **extra}
    deployment = build_deployment(
        parse("ns1", "orders", spec),
        h.stream_consumer("orders", spec),
        replicas=0,
        default_image="streamscale:test",
        default_redis_url="redis://redis:6379/0",
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    written = {item["name"] for item in container["env"] if item["name"].startswith(PREFIX)}
    assert PREFIX + "STREAM" in written and PREFIX + "REDIS_URL" in written
    settings = {PREFIX + name.upper() for name in ConsumerSettings.model_fields}
    assert written <= settings, f"not consumer settings: {sorted(written - settings)}"


# Each defaulted field of the CRD's spec, and where `parse()` puts its own default.
DEFAULTED: dict[tuple[str, str], Any] = {
    ("scaling", "minReplicas"): lambda s: s.policy.min_replicas,
    ("scaling", "maxReplicas"): lambda s: s.policy.max_replicas,
    ("scaling", "backlogPerReplica"): lambda s: s.policy.backlog_per_replica,
    ("scaling", "activationBacklog"): lambda s: s.policy.activation_backlog,
    ("scaling", "pollSeconds"): lambda s: s.poll_seconds,
    ("scaling", "scaleDownStabilizationSeconds"): lambda s: s.policy.stabilization_seconds,
    ("deadLetter", "maxDeliveries"): lambda s: s.max_deliveries,
    ("deadLetter", "idleSeconds"): lambda s: s.idle_seconds,
}


def crd_defaults() -> dict[tuple[str, str], Any]:
    (version,) = h.load_crd()["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return {
        (section, name): field["default"]
        for section, schema in spec.items()
        for name, field in (schema.get("properties") or {}).items()
        if "default" in field
    }


def test_the_crds_defaults_are_the_operators_parsing_defaults() -> None:
    defaults = crd_defaults()
    assert set(defaults) == set(DEFAULTED), "a defaulted CRD field without a check here"
    parsed: ConsumerSpec = parse("ns1", "x", {"stream": "s", "group": "g", "database": h.DATABASE})
    for key, default in defaults.items():
        assert DEFAULTED[key](parsed) == default, f"spec.{'.'.join(key)}"
