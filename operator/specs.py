"""A StreamConsumer's spec as a typed, validated object (the Deployment is `deployment.py`'s).

The CRD's schema already rejects most bad specs at admission; `parse()` checks again because the
operator may meet objects written before a schema change, and because the tests and the demo
build specs by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from streamscale.core.constants import DEAD_LETTER_SUFFIX
from streamscale.core.deadletter import cluster_problem
from streamscale.core.shards import MAX_SHARDS, logical_stream, shard_streams
from streamscale.operator import constants
from streamscale.operator.scaling import Policy


class SpecError(ValueError):
    """The spec cannot be acted on; the message says which field and why."""

    reason = "InvalidSpec"
    """The condition and Event reason."""


class NoRedis(SpecError):
    """Neither the spec nor the operator names a Redis."""

    reason = "NoRedisConfigured"

    def __init__(self) -> None:
        super().__init__(
            "no Redis configured: the StreamConsumer has no spec.redis and the operator has no"
            " STREAMSCALE_REDIS_URL, so nothing is polled, scaled or dead-lettered. Set"
            " spec.redis.urlSecretRef (or spec.redis.url), or give the operator a Redis (chart"
            " values redis.url or redis.existingSecret)."
        )


class HashSlotMismatch(SpecError):
    """On Redis Cluster, the stream and its dead-letter stream hash to different slots."""

    reason = "HashSlotMismatch"


def cluster_names(spec: ConsumerSpec) -> HashSlotMismatch | None:
    """The refusal of `spec`'s names on a Redis Cluster (they must share a hash tag), or None."""
    problem = cluster_problem(spec.streams, spec.dead_letter_for, spec.group)
    if problem is None:
        return None
    return HashSlotMismatch(f"{problem} (spec.stream or spec.streams, spec.deadLetter.stream)")


class ModelConflict(SpecError):
    """Another StreamConsumer's stream already feeds this one's model table."""

    reason = "ModelConflict"


@dataclasses.dataclass(frozen=True)
class SecretRef:
    """A key of a Secret in the StreamConsumer's namespace."""

    name: str
    key: str


@dataclasses.dataclass(frozen=True)
class Retention:
    """`spec.retention`: trim what every group has read, and no more."""

    max_age_seconds: float | None = None
    """Trim entries older than this (by their ID's timestamp)."""
    min_id: str | None = None
    """Trim entries below this ID."""


@dataclasses.dataclass(frozen=True)
class ConsumerSpec:
    """One StreamConsumer, as the operator acts on it."""

    namespace: str
    name: str
    streams: tuple[str, ...]
    """`spec.stream`, or every one of `spec.streams`: read by one Deployment, scaled as one."""
    group: str
    redis_url: str | None
    redis_secret: SecretRef | None
    database_secret: SecretRef | None
    model: str | None
    handler: str | None
    image: str | None
    resources: Mapping[str, Any]
    env: tuple[Mapping[str, Any], ...]
    scale_target: str | None
    policy: Policy
    replica_throughput: float | None
    """drainTime mode: entries per second one replica gets through, until one is measured."""
    poll_seconds: float
    dead_letter_stream: str | None
    """`spec.deadLetter.stream` (one stream only); None: each stream's own `<stream>:dlq`."""
    max_deliveries: int
    idle_seconds: float
    retention: Retention | None
    creation_timestamp: str = ""
    """`metadata.creationTimestamp`: the older of two conflicting StreamConsumers wins."""
    shards: int = 1
    """`spec.shards`: `streams` are the shards `{stream:0}` .. of one logical stream."""

    @property
    def stream(self) -> str:
        """The streams as the consumers' STREAMSCALE_STREAM reads them (comma-separated), or
        the logical stream's name when sharded (with STREAMSCALE_SHARDS)."""
        if self.shards > 1:
            logical = logical_stream(self.streams[0])
            assert logical is not None
            return logical[0]
        return ",".join(self.streams)

    def dead_letter_for(self, stream: str) -> str:
        """The dead-letter stream of one of the streams."""
        return self.dead_letter_stream or stream + DEAD_LETTER_SUFFIX

    @property
    def deployment_name(self) -> str:
        """The Deployment whose replicas the operator sets."""
        return self.scale_target or self.name


def _secret_ref(raw: Any, where: str) -> SecretRef | None:
    if not raw:
        return None
    if not isinstance(raw, Mapping) or not raw.get("name") or not raw.get("key"):
        raise SpecError(f"{where} needs both `name` and `key`")
    return SecretRef(str(raw["name"]), str(raw["key"]))


def _number(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"spec.scaling.{key} must be a number, got {value!r}")
    return float(value)


def _optional_number(raw: Mapping[str, Any], key: str) -> float | None:
    return None if raw.get(key) is None else _number(raw, key, 0.0)


def _streams(spec: Mapping[str, Any], shards: int) -> tuple[str, ...]:
    """`spec.stream` (or its `shards`) or `spec.streams`, exactly one of them, names unique and
    without commas."""
    one, many = spec.get("stream"), spec.get("streams")
    if bool(one) == bool(many):
        raise SpecError("set spec.stream (one stream) or spec.streams (several), exactly one")
    if shards > 1:
        if many:
            raise SpecError("spec.shards shards one logical stream: use spec.stream, not streams")
        return tuple(shard_streams(str(one), shards))
    names = [str(one)] if one else [str(name) for name in many or ()]
    if not all(names):
        raise SpecError("spec.streams has an empty stream name")
    if any("," in name for name in names):
        raise SpecError("stream names with a comma cannot be read by the consumers")
    if len(set(names)) != len(names):
        raise SpecError("spec.streams names a stream twice")
    return tuple(names)


def _shards(spec: Mapping[str, Any]) -> int:
    raw = spec.get("shards", 1)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_SHARDS:
        raise SpecError(f"spec.shards must be a whole number within 1..{MAX_SHARDS}, got {raw!r}")
    return raw


def _dead_letter_stream(dead_letter: Mapping[str, Any], streams: tuple[str, ...]) -> str | None:
    name = dead_letter.get("stream") or None
    if name and len(streams) > 1:
        raise SpecError(
            "spec.deadLetter.stream names one dead-letter stream, but spec.streams has several:"
            " unset it, each stream then has its own `<stream>:dlq`"
        )
    return str(name) if name else None


def parse(
    namespace: str, name: str, spec: Mapping[str, Any], *, creation_timestamp: str = ""
) -> ConsumerSpec:
    """Validate `spec` and fill in the defaults (the same defaults as the CRD's)."""
    group = spec.get("group")
    shards = _shards(spec)
    streams = _streams(spec, shards)
    if not group:
        raise SpecError("spec.group is required")
    redis = spec.get("redis") or {}
    database = spec.get("database") or {}
    consumer = spec.get("consumer") or {}
    scaling = spec.get("scaling") or {}
    dead_letter = spec.get("deadLetter") or {}
    target = spec.get("scaleTargetRef") or {}
    retention_raw = spec.get("retention")
    if spec.get("model") and spec.get("handler"):
        raise SpecError("set spec.model or spec.handler, not both")
    if not spec.get("handler") and not database.get("urlSecretRef"):
        raise SpecError(
            "spec.database.urlSecretRef is not set: the consumers would store rows in SQLite"
            " inside their pods' emptyDir, acked and then lost at the next scale-in. Point"
            " spec.database.urlSecretRef at a Secret key holding a PostgreSQL URL (or set"
            " spec.handler for handler mode)."
        )
    try:
        policy = Policy(
            min_replicas=int(_number(scaling, "minReplicas", constants.DEFAULT_MIN_REPLICAS)),
            max_replicas=int(_number(scaling, "maxReplicas", constants.DEFAULT_MAX_REPLICAS)),
            backlog_per_replica=int(
                _number(scaling, "backlogPerReplica", constants.DEFAULT_BACKLOG_PER_REPLICA)
            ),
            activation_backlog=int(
                _number(scaling, "activationBacklog", constants.DEFAULT_ACTIVATION_BACKLOG)
            ),
            stabilization_seconds=_number(
                scaling, "scaleDownStabilizationSeconds", constants.DEFAULT_STABILIZATION_SECONDS
            ),
            mode=str(scaling.get("mode") or constants.MODE_BACKLOG),
            target_drain_seconds=_optional_number(scaling, "targetDrainSeconds"),
        )
    except ValueError as exc:
        raise SpecError(f"spec.scaling: {exc}") from exc
    replica_throughput = _optional_number(scaling, "replicaThroughput")
    if replica_throughput is not None and replica_throughput <= 0:
        raise SpecError("spec.scaling.replicaThroughput must be > 0")
    poll_seconds = _number(scaling, "pollSeconds", constants.DEFAULT_POLL_SECONDS)
    if poll_seconds <= 0:
        raise SpecError("spec.scaling.pollSeconds must be > 0")
    retention = None
    if retention_raw:
        max_age = retention_raw.get("maxAgeSeconds")
        min_id = retention_raw.get("minId")
        if max_age is None and not min_id:
            raise SpecError("spec.retention needs maxAgeSeconds or minId")
        retention = Retention(float(max_age) if max_age is not None else None, min_id or None)
    return ConsumerSpec(
        namespace=namespace,
        name=name,
        streams=streams,
        group=str(group),
        redis_url=redis.get("url") or None,
        redis_secret=_secret_ref(redis.get("urlSecretRef"), "spec.redis.urlSecretRef"),
        database_secret=_secret_ref(database.get("urlSecretRef"), "spec.database.urlSecretRef"),
        model=spec.get("model") or None,
        handler=spec.get("handler") or None,
        image=consumer.get("image") or None,
        resources=dict(consumer.get("resources") or {}),
        env=tuple(consumer.get("env") or ()),
        scale_target=target.get("name") or None,
        policy=policy,
        replica_throughput=replica_throughput,
        poll_seconds=poll_seconds,
        dead_letter_stream=_dead_letter_stream(dead_letter, streams),
        max_deliveries=int(dead_letter.get("maxDeliveries", constants.DEFAULT_MAX_DELIVERIES)),
        idle_seconds=float(dead_letter.get("idleSeconds", constants.DEFAULT_IDLE_SECONDS)),
        retention=retention,
        creation_timestamp=creation_timestamp,
        shards=shards,
    )


def model_conflict(spec: ConsumerSpec, others: Iterable[Mapping[str, Any]]) -> ModelConflict | None:
    """Refuse `spec` when an older StreamConsumer feeds the same model table from another stream.

    The table is keyed on the entry ID alone (`stream_id`), so two streams in one table collide
    and silently lose rows. The oldest StreamConsumer (by creation time, then name) keeps the
    table (with its stream; other groups of that stream may share it); `others` are the
    StreamConsumer bodies of the same namespace.
    """
    if not spec.model or spec.database_secret is None:
        return None
    owner: tuple[str, str, str] = (spec.creation_timestamp, spec.name, spec.stream)
    for other in others:
        meta = other.get("metadata") or {}
        raw = other.get("spec") or {}
        ref = ((raw.get("database") or {}).get("urlSecretRef")) or {}
        same_table = (
            raw.get("model") == spec.model
            and ref.get("name") == spec.database_secret.name
            and ref.get("key") == spec.database_secret.key
        )
        candidate = (
            str(meta.get("creationTimestamp") or ""),
            str(meta.get("name") or ""),
            str(raw.get("stream") or ",".join(map(str, raw.get("streams") or ()))),
        )
        leaving = bool(meta.get("deletionTimestamp"))
        if same_table and not leaving and candidate[2] and candidate < owner:
            owner = candidate
    _, name, stream = owner
    if stream != spec.stream:
        return ModelConflict(
            f"model {spec.model} in the database of Secret {spec.database_secret.name}"
            f" (key {spec.database_secret.key}) is already fed by StreamConsumer {name} from"
            f" stream {stream}; its table is keyed on stream_id alone, so a second stream"
            f" ({spec.stream}) would silently lose rows. Give this StreamConsumer its own model"
            " (table) or database, or feed both through one stream."
        )
    return None
