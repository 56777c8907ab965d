"""The consumer Deployment the operator owns for a StreamConsumer, built from its parsed spec.

Secrets reach the pods only by reference (`secretKeyRef`); the pods run under the restricted
Pod Security Standard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamscale.core import redis_urls
from streamscale.core.constants import PATH_HEALTHZ, PATH_READYZ
from streamscale.operator import constants
from streamscale.operator.specs import ConsumerSpec, NoRedis, SecretRef, SpecError


def has_password(url: str) -> bool:
    """Whether a Redis URL carries credentials (then it must not go into a Deployment as text).

    Any of them: the user part, a `password=` query option, a Sentinel URL's `sentinel_password`.
    """
    return redis_urls.has_credentials(url)


def selector_labels(name: str) -> dict[str, str]:
    """The labels that select one StreamConsumer's consumer pods."""
    return {constants.LABEL_NAME: constants.CONSUMER_APP, constants.LABEL_INSTANCE: name}


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _secret_env(name: str, ref: SecretRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def consumer_env(spec: ConsumerSpec, default_redis_url: str | None) -> list[dict[str, Any]]:
    """The consumer container's environment; secrets only ever by reference."""
    env = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _env("STREAMSCALE_STREAM", spec.stream),
    ]
    if spec.shards > 1:
        env.append(_env("STREAMSCALE_SHARDS", str(spec.shards)))
    env += [
        _env("STREAMSCALE_GROUP", spec.group),
        _env("STREAMSCALE_NAMESPACE", spec.namespace),
        _env("STREAMSCALE_NAME", spec.name),
    ]
    if len(spec.streams) == 1:  # several streams: each has its own `<stream>:dlq`
        env.append(_env("STREAMSCALE_DEAD_LETTER_STREAM", spec.dead_letter_for(spec.stream)))
    env += [
        _env("STREAMSCALE_MAX_DELIVERIES", str(spec.max_deliveries)),
        _env("STREAMSCALE_HTTP_PORT", str(constants.METRICS_PORT)),
    ]
    if spec.model:
        env.append(_env("STREAMSCALE_MODEL", spec.model))
    if spec.handler:
        env.append(_env("STREAMSCALE_HANDLER", spec.handler))
    if spec.redis_secret:
        env.append(_secret_env("STREAMSCALE_REDIS_URL", spec.redis_secret))
    elif spec.redis_url:
        if has_password(spec.redis_url):
            raise SpecError(
                "spec.redis.url carries a password; put the URL in a Secret and use"
                " spec.redis.urlSecretRef instead"
            )
        env.append(_env("STREAMSCALE_REDIS_URL", spec.redis_url))
    elif default_redis_url is None:
        raise NoRedis
    elif has_password(default_redis_url):
        raise SpecError(
            "spec.redis is not set and the operator's own Redis URL carries a password, which is"
            " never copied into a Deployment; set spec.redis.urlSecretRef"
        )
    else:
        env.append(_env("STREAMSCALE_REDIS_URL", default_redis_url))
    if spec.database_secret:
        env.append(_secret_env("STREAMSCALE_DATABASE_URL", spec.database_secret))
    ours = {item["name"] for item in env}
    # The user's env comes last but cannot override what the operator sets (names, the stream):
    # a consumer reading another stream than the one the operator scales by would be a silent bug.
    env += [dict(item) for item in spec.env if item.get("name") not in ours]
    return env


def build_deployment(
    spec: ConsumerSpec,
    owner: Mapping[str, Any],
    *,
    replicas: int,
    default_image: str,
    default_redis_url: str | None,
) -> dict[str, Any]:
    """The consumer Deployment the operator owns for `spec` (restricted security profile)."""
    labels = {
        **selector_labels(spec.name),
        constants.LABEL_COMPONENT: "consumer",
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
    }
    probe = {"port": constants.METRICS_PORT_NAME}
    container = {
        "name": constants.CONTAINER_NAME,
        "image": spec.image or default_image,
        "args": ["consume"],
        "env": consumer_env(spec, default_redis_url),
        "ports": [{"name": constants.METRICS_PORT_NAME, "containerPort": constants.METRICS_PORT}],
        "resources": dict(spec.resources),
        "livenessProbe": {
            "httpGet": {"path": PATH_HEALTHZ, **probe},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": PATH_READYZ, **probe},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": constants.RUN_AS_USER,
            "runAsGroup": constants.RUN_AS_USER,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    }
    meta = owner.get("metadata", {})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": f"{constants.GROUP}/{constants.VERSION}",
                    "kind": constants.KIND,
                    "name": meta.get("name", spec.name),
                    "uid": meta.get("uid", ""),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(spec.name)},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(constants.METRICS_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    # Consumers never call the Kubernetes API: no token in the pod to leak.
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": constants.TERMINATION_GRACE_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": constants.RUN_AS_USER,
                        "runAsGroup": constants.RUN_AS_USER,
                        "fsGroup": constants.RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"sizeLimit": constants.TMP_SIZE_LIMIT}}
                    ],
                },
            },
        },
    }
