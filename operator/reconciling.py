"""The operator's state and the work behind the handlers: Deployments, polls, status.

`Runtime` holds what lives as long as the operator: settings, the Kubernetes client, one Redis
client per URL. `Poller` holds what lives as long as one StreamConsumer's daemon: the scaling
window, the dead-letter count, the health. The kopf handlers in `handlers.py` only call these.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from streamscale.core import lag
from streamscale.core.backoff import Backoff
from streamscale.core.deadletter import Scripts, counter_key, read_counts
from streamscale.core.streams import Client, connect, is_cluster
from streamscale.operator import constants, metrics, redis_failures
from streamscale.operator.deployment import build_deployment
from streamscale.operator.forecasting import Counters, RateEstimator, Rates
from streamscale.operator.kube import (
    Kube,
    KubeError,
    custom_list_path,
    custom_path,
    deployments_path,
    matches,
    pods_path,
    secret_path,
    selector_string,
)
from streamscale.operator.observing import Observation, combine, observe
from streamscale.operator.reclaiming import (
    Reclaimed,
    Rules,
    deletion_costs,
    owner_pod,
    reclaim,
)
from streamscale.operator.retention import trim
from streamscale.operator.scaling import Decision, ScalingState, decide
from streamscale.operator.settings import OperatorSettings
from streamscale.operator.specs import (
    ConsumerSpec,
    NoRedis,
    SpecError,
    cluster_names,
    model_conflict,
    parse,
)
from streamscale.operator.status import Condition, degraded, healthy, merge_conditions, now_iso

logger = logging.getLogger(__name__)

SECRET_TTL = 60.0
"""Seconds a Secret's value is reused before it is read again (rotation takes effect then)."""
TERMINAL_PHASES = ("Succeeded", "Failed")


class PeeringMissing(Exception):
    """kopf's peering resource is not installed, so kopf would pause every watch for good."""


PEERING_API = "/apis/kopf.dev/v1"


class Runtime:
    """What the operator's handlers share: settings, the API client, Redis clients."""

    def __init__(
        self,
        settings: OperatorSettings,
        *,
        clusterwide: bool = False,
        stop: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clusterwide = clusterwide
        self._stop = stop
        self.fatal: Exception | None = None
        """Why the operator stopped itself (raised by `running.operate` once kopf has stopped)."""
        self._kube: Kube | None = None
        self._redis: dict[str, tuple[Client, Scripts]] = {}
        self._secrets: dict[tuple[str, str, str], tuple[float, str]] = {}
        self._consumers: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self.closed = False
        """Set at the operator's cleanup: late handler calls during shutdown then do nothing."""
        self.exiting = False
        """Set when kopf stops the daemons because the operator exits (not a deleted resource)."""

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            raise RuntimeError("not logged in to Kubernetes yet")
        return self._kube

    async def login(self, info: kopf.ConnectionInfo) -> None:
        """Use `info` (what kopf's login handler returned) for the operator's own API calls."""
        old, self._kube = self._kube, Kube(info)
        if old is not None:
            await old.close()

    async def check_peering(self) -> None:
        """Stop the operator, saying what to do, when kopf's peering resource is missing.

        With peering on (the default), kopf pauses every watch while its peering resource is
        absent: nothing would happen, and the log would end at "Initial authentication has
        finished.". Only a definite "not served" stops the operator; a failed discovery call
        (RBAC, a flaky API server) leaves the decision to kopf.
        """
        if self.settings.standalone:
            return
        plural = "clusterkopfpeerings" if self.clusterwide else "kopfpeerings"
        try:
            found = await self.kube.get_or_none(PEERING_API)
        except (KubeError, OSError) as exc:
            logger.warning("cannot check for kopf's peering resource %s.kopf.dev: %s", plural, exc)
            return
        served = {item.get("name") for item in (found or {}).get("resources") or ()}
        if plural in served:
            return
        self.fatal = PeeringMissing(
            f"kopf's peering resource {plural}.kopf.dev is not installed in this cluster, so kopf"
            " would pause every watch: no StreamConsumer would get a Deployment or a status."
            " Install the peering CRDs the chart ships (kubectl apply -f"
            " charts/streamscale/crds/kopfpeerings.yaml), or, when exactly one operator runs,"
            " set STREAMSCALE_STANDALONE=true."
        )
        logger.error("%s", self.fatal)
        if self._stop is not None:
            self._stop()

    async def close(self) -> None:
        self.closed = True
        if self._kube is not None:
            await self._kube.close()
            self._kube = None
        for client, _ in self._redis.values():
            await client.aclose()
        self._redis.clear()

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, cached for `SECRET_TTL` seconds."""
        cache_key = (namespace, name, key)
        cached = self._secrets.get(cache_key)
        if cached is not None and time.monotonic() - cached[0] < SECRET_TTL:
            return cached[1]
        secret = await self.kube.get(secret_path(namespace, name))
        data = secret.get("data") or {}
        if key not in data:
            raise SpecError(f"Secret {name} has no key {key!r}")
        value = base64.b64decode(data[key]).decode().strip()
        self._secrets[cache_key] = (time.monotonic(), value)
        return value

    async def check_model(self, spec: ConsumerSpec, *, fresh: bool = False) -> None:
        """Raise `ModelConflict` when an older StreamConsumer feeds the same model table.

        The namespace's StreamConsumers are listed at most every `api_cache_seconds` for the
        polls; `fresh` (a create or an update) lists them now.
        """
        if not spec.model or spec.database_secret is None:
            return
        cached = self._consumers.get(spec.namespace)
        max_age = self.settings.api_cache_seconds
        if fresh or cached is None or time.monotonic() - cached[0] > max_age:
            listing = await self.kube.get(custom_list_path(spec.namespace))
            cached = (time.monotonic(), list(listing.get("items") or ()))
            self._consumers[spec.namespace] = cached
        conflict = model_conflict(spec, cached[1])
        if conflict is not None:
            raise conflict

    @property
    def default_redis_url(self) -> str | None:
        """The operator's own Redis URL, for StreamConsumers without spec.redis."""
        url = self.settings.redis_url
        return None if url is None else url.get_secret_value()

    async def redis_url(self, spec: ConsumerSpec) -> str:
        """spec.redis.url, else spec.redis.urlSecretRef, else the operator's own URL."""
        if spec.redis_url:
            return spec.redis_url
        if spec.redis_secret:
            ref = spec.redis_secret
            return await self.secret_value(spec.namespace, ref.name, ref.key)
        url = self.default_redis_url
        if url is None:
            raise NoRedis
        return url

    def redis(self, url: str) -> tuple[Client, Scripts]:
        """One client (and its registered scripts) per Redis URL, shared by StreamConsumers."""
        if url not in self._redis:
            # No connection cap: redis-py's asyncio pool fails at its cap instead of waiting,
            # and each poll holds one or two connections for a few milliseconds.
            client = connect(url, socket_timeout=self.settings.redis_timeout_seconds)
            self._redis[url] = (client, Scripts(client))
        return self._redis[url]

    async def ensure_deployment(
        self, spec: ConsumerSpec, body: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Create the owned Deployment, or bring its template in line with the spec.

        `spec.replicas` is never patched here: the poller owns it. With `scaleTargetRef`, the
        target is someone else's Deployment and only its replicas are ever touched.
        """
        if spec.scale_target:
            return None
        wanted = build_deployment(
            spec,
            body,
            replicas=spec.policy.min_replicas,
            default_image=self.settings.consumer_image,
            default_redis_url=self.default_redis_url,
        )
        path = deployments_path(spec.namespace, spec.name)
        existing = await self.kube.get_or_none(path)
        if existing is None:
            logger.info("creating Deployment %s/%s", spec.namespace, spec.name)
            try:
                return await self.kube.create(deployments_path(spec.namespace), wanted)
            except KubeError as exc:
                # The create handler and the poll daemon's first tick can race to create it.
                if exc.status != 409:
                    raise
        patch = {"metadata": wanted["metadata"], "spec": dict(wanted["spec"])}
        del patch["spec"]["replicas"]
        return await self.kube.merge_patch(path, patch)

    async def live_pods(self, spec: ConsumerSpec, deployment: Mapping[str, Any]) -> set[str]:
        """Names of the pods (not finished) selected by the Deployment."""
        match_labels = (deployment.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        if not match_labels:
            raise SpecError(f"Deployment {spec.deployment_name} has no selector.matchLabels")
        listing = await self.kube.get(
            pods_path(spec.namespace), {"labelSelector": selector_string(match_labels)}
        )
        return {
            pod["metadata"]["name"]
            for pod in listing.get("items") or ()
            if matches(pod.get("metadata", {}).get("labels"), match_labels)
            if (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES
        }


@dataclasses.dataclass
class DeploymentActuator:
    """The scaling `Actuator` for a Deployment's `spec.replicas`, read at most every `max_age` s.

    Between reads the replica count the operator itself set is trusted; the poller re-reads it
    before acting on a stale value, so a hand-made change is never overwritten unseen.
    """

    kube: Kube
    namespace: str
    name: str
    max_age: float = 0.0
    body: dict[str, Any] | None = None
    fetched_at: float = -math.inf

    @property
    def fresh(self) -> bool:
        return self.body is not None and time.monotonic() - self.fetched_at <= self.max_age

    async def refresh(self) -> int:
        self.body = await self.kube.get(deployments_path(self.namespace, self.name))
        self.fetched_at = time.monotonic()
        return replicas_of(self.body)

    async def get_replicas(self) -> int:
        if self.fresh and self.body is not None:
            return replicas_of(self.body)
        return await self.refresh()

    async def set_replicas(self, n: int) -> None:
        path = deployments_path(self.namespace, self.name)
        self.body = await self.kube.merge_patch(path, {"spec": {"replicas": n}})
        self.fetched_at = time.monotonic()


def replicas_of(deployment: Mapping[str, Any]) -> int:
    """`spec.replicas` (Kubernetes' default is 1 when the field is absent)."""
    return int((deployment.get("spec") or {}).get("replicas", 1) or 0)


@dataclasses.dataclass
class PollResult:
    """What one poll saw and did."""

    observation: Observation | None = None
    decision: Decision | None = None
    reclaimed: Reclaimed | None = None
    trimmed: int = 0
    error: str | None = None
    delay: float = constants.DEFAULT_POLL_SECONDS


@dataclasses.dataclass(frozen=True)
class Seen:
    """The observe phase's outcome: the group in Redis, the Deployment's replicas."""

    observation: Observation
    """The sum over the StreamConsumer's streams (the one stream's, usually)."""
    actuator: DeploymentActuator
    current: int
    just_read: bool
    """The replicas were read from the API during this poll (not the cache)."""
    streams: Mapping[str, Observation]
    """Each stream's own observation."""


@dataclasses.dataclass(frozen=True)
class Moves:
    """The reclaim phase's outcome."""

    reclaimed: Reclaimed
    dead_lettered: int
    """Every move ever made for this StreamConsumer (from the Redis counter)."""
    pending: int
    """The group's pending count minus what this pass moved (and acked)."""
    idle_seconds: float
    """The idle time after which entries move: the spec's, or the operator's floor."""
    notes: tuple[str, ...]
    trimmed: int
    pending_by_stream: Mapping[str, int]


class Poller:
    """One StreamConsumer's poll loop state: `tick()` once per `pollSeconds`."""

    def __init__(
        self, runtime: Runtime, namespace: str, name: str, status: Mapping[str, Any] | None
    ) -> None:
        self.runtime = runtime
        self.namespace = namespace
        self.name = name
        self.state = ScalingState()
        self.rates = RateEstimator()
        status = status or {}
        self.dead_lettered = int(status.get("deadLettered") or 0)
        """The count last reported (status and Events); Redis' counter hash is the truth."""
        self.last_scale_time: str | None = status.get("lastScaleTime")
        self.conditions: list[dict[str, Any]] = list(status.get("conditions") or ())
        self.written: dict[str, Any] = {}
        self.failing: str | None = None
        self.backoff = Backoff(base=1.0, cap=runtime.settings.error_backoff_cap_seconds)
        self.actuator: DeploymentActuator | None = None
        self.pods: set[str] | None = None
        self.pods_at = -math.inf

    @property
    def labels(self) -> tuple[str, str]:
        return self.namespace, self.name

    async def tick(self, body: kopf.Body) -> PollResult:
        """Poll once: observe, move dead letters, trim, scale, write status and metrics."""
        started = time.perf_counter()
        result = PollResult()
        replicas: int | None = None
        created = str((body.get("metadata") or {}).get("creationTimestamp") or "")
        try:
            spec = parse(
                self.namespace, self.name, body.get("spec") or {}, creation_timestamp=created
            )
        except SpecError as exc:
            await self._fail(body, exc.reason, str(exc), replicas=None)
            result.error = str(exc)
            return result
        result.delay = spec.poll_seconds
        try:
            replicas = await self._poll(spec, body, result)
            # Only polls that reached Redis count: a poll rate of zero is what the
            # StreamscaleRedisUnreachable alert watches for.
            metrics.POLL_SECONDS.labels(*self.labels).observe(time.perf_counter() - started)
        except redis_failures.FAILURES as exc:
            failure = redis_failures.classify(exc)
            await self._fail(body, failure.reason, failure.message, replicas=replicas)
            result.error = failure.message
            result.delay = min(self.backoff.next_delay() + spec.poll_seconds, self._cap(spec))
        except KubeError as exc:
            message = f"Kubernetes API error: {exc}"
            await self._fail(body, "KubernetesError", message, replicas=replicas)
            result.error = message
            result.delay = min(self.backoff.next_delay() + spec.poll_seconds, self._cap(spec))
        except SpecError as exc:
            await self._fail(body, exc.reason, str(exc), replicas=replicas)
            result.error = str(exc)
        return result

    async def _pods(
        self, spec: ConsumerSpec, actuator: DeploymentActuator, obs: Observation
    ) -> set[str]:
        """The live pods, re-listed when the cache is old or a consumer has no pod in it."""
        age = time.monotonic() - self.pods_at
        unknown = self.pods is None or any(
            owner_pod(info.name, self.pods) is None for info in obs.consumers
        )
        if self.pods is None or unknown or age > self.runtime.settings.api_cache_seconds:
            if actuator.body is None:
                await actuator.refresh()
            self.pods = await self.runtime.live_pods(spec, actuator.body or {})
            self.pods_at = time.monotonic()
        return self.pods

    def _cap(self, spec: ConsumerSpec) -> float:
        return max(spec.poll_seconds, self.runtime.settings.error_backoff_cap_seconds)

    async def _poll(self, spec: ConsumerSpec, body: kopf.Body, result: PollResult) -> int | None:
        """One poll, in four phases: observe, reclaim, scale, report; returns the replicas."""
        await self.runtime.check_model(spec)
        client, scripts = self.runtime.redis(await self.runtime.redis_url(spec))
        if is_cluster(client):
            mismatch = cluster_names(spec)
            if mismatch is not None:
                raise mismatch
        seen = await self._observe(spec, body, client)
        result.observation = seen.observation
        moves = await self._reclaim(spec, body, client, scripts, seen)
        result.reclaimed, result.trimmed = moves.reclaimed, moves.trimmed
        backlog = seen.observation.lag + moves.pending
        rates = self._rates(spec, seen, backlog)
        decision = result.decision = await self._scale(spec, body, seen, backlog, rates)
        self._recovered(body)
        await self._report(body, seen, moves, decision, rates)
        return decision.target

    def _rates(self, spec: ConsumerSpec, seen: Seen, backlog: int) -> Rates:
        """Arrival, service and per-replica rates from this poll's counters and the last's."""
        if self.rates.seed_per_replica != spec.replica_throughput:
            self.rates = RateEstimator(seed_per_replica=spec.replica_throughput)
        observation = seen.observation
        counters = Counters(
            time=time.monotonic(),
            entries_added=observation.entries_added,
            completed=observation.group.completed,
            backlog=backlog,
            replicas=seen.current,
        )
        return self.rates.update(counters)

    async def _observe(self, spec: ConsumerSpec, body: kopf.Body, client: Client) -> Seen:
        """The group's state in Redis and the Deployment's replicas (created when missing)."""
        runtime = self.runtime
        policy = spec.policy
        limit = min(
            lag.DEFAULT_LIMIT,
            policy.backlog_per_replica * policy.max_replicas + policy.activation_backlog + 1,
        )
        # A stream in the status was seen with its group: if the group is gone now, it was
        # destroyed (a stream just added to spec.streams has its group created).
        seen_before = _streams_seen(body.get("status") or {}, spec.streams)
        per_stream = {
            stream: await observe(
                client, stream, spec.group, estimate_limit=limit,
                seen_before=stream in seen_before,
            )
            for stream in spec.streams
        }  # fmt: skip
        observation = combine(spec.group, per_stream)
        actuator = self.actuator
        if actuator is None or actuator.name != spec.deployment_name:
            actuator = self.actuator = DeploymentActuator(
                runtime.kube,
                spec.namespace,
                spec.deployment_name,
                max_age=runtime.settings.api_cache_seconds,
            )
        read_at = actuator.fetched_at
        try:
            current = await actuator.get_replicas()
        except KubeError as exc:
            if exc.status != 404 or spec.scale_target:
                raise
            actuator.body = await runtime.ensure_deployment(spec, body)
            actuator.fetched_at = time.monotonic()
            current = replicas_of(actuator.body or {})
        return Seen(
            observation, actuator, current, just_read=actuator.fetched_at != read_at,
            streams=per_stream,
        )  # fmt: skip

    async def _reclaim(
        self,
        spec: ConsumerSpec,
        body: kopf.Body,
        client: Client,
        scripts: Scripts,
        seen: Seen,
    ) -> Moves:
        """Move stranded entries, delete gone consumers, trim; count the moves from Redis."""
        settings = self.runtime.settings
        observation = seen.observation
        gone_idle = settings.gone_idle_seconds
        # Nothing moves before the operator's floor, whatever the spec asks: say so in the status
        # rather than let idleSeconds below it look like a broken mover.
        idle_seconds = max(spec.idle_seconds, settings.move_min_idle_seconds)
        notes = []
        if spec.idle_seconds < settings.move_min_idle_seconds:
            notes.append(
                f"spec.deadLetter.idleSeconds {spec.idle_seconds:g} is below the operator's floor"
                f" (STREAMSCALE_MOVE_MIN_IDLE_SECONDS={settings.move_min_idle_seconds:g}), which"
                " protects entries a live consumer has just taken: entries move after"
                f" {idle_seconds:g}s"
            )
        rules = Rules(
            max_deliveries=spec.max_deliveries,
            idle_ms=int(spec.idle_seconds * 1000),
            min_idle_ms=int(settings.move_min_idle_seconds * 1000),
            gone_idle_ms=None if gone_idle is None else int(gone_idle * 1000),
        )
        pods: set[str] | None = None
        if observation.consumers:
            try:
                pods = await self._pods(spec, seen.actuator, observation)
            except KubeError as exc:
                logger.warning("%s/%s: cannot list pods: %s", *self.labels, exc)
        reclaimed = Reclaimed()
        moved: collections.Counter[str] = collections.Counter()
        pending_by_stream: dict[str, int] = {}
        trimmed = 0
        for stream, part in seen.streams.items():
            counter = counter_key(spec.dead_letter_for(stream), stream, spec.group)
            here = await reclaim(
                scripts,
                stream,
                spec.group,
                spec.dead_letter_for(stream),
                consumers=list(part.consumers),
                pods=pods,
                rules=rules,
                max_pages=settings.max_move_pages,
                counter=counter,
            )
            reclaimed.add(here)
            pending_by_stream[stream] = max(0, part.pending - here.total)
            # The count comes from the hash the move script increments with each move, never
            # from this process' memory: an operator killed between a move and its status write
            # loses nothing, its successor reports those moves here.
            moved.update(await read_counts(client, counter))
            if spec.retention is not None:
                trimmed += await trim(client, stream, spec.retention)
        metrics.DEAD_LETTERED.set(*self.labels, dict(moved))
        dead_lettered = sum(moved.values())
        self._report_moves(body, spec, reclaimed, dead_lettered)
        if reclaimed.removed:
            logger.info("%s/%s: removed gone consumers %s", *self.labels, reclaimed.removed)
        # The mover acked what it moved: the backlog the policy sees must not count it.
        pending = max(0, observation.pending - reclaimed.total)
        return Moves(
            reclaimed, dead_lettered, pending, idle_seconds, tuple(notes), trimmed,
            pending_by_stream,
        )  # fmt: skip

    async def _scale(
        self, spec: ConsumerSpec, body: kopf.Body, seen: Seen, backlog: int, rates: Rates
    ) -> Decision:
        """Decide on the replicas and apply the decision (target = the replicas afterwards)."""
        policy, actuator, current = spec.policy, seen.actuator, seen.current
        now = time.monotonic()
        decision = decide(
            policy, self.state, backlog=backlog, current=current, now=now, rates=rates
        )
        if decision.direction is not None and not seen.just_read:
            # About to act on a cached count: read it first, someone may have scaled by hand.
            fresh = await actuator.refresh()
            if fresh != current:
                current = fresh
                decision = decide(
                    policy, self.state, backlog=backlog, current=current, now=now, rates=rates
                )
        if decision.direction is None:
            return decision
        if decision.direction == constants.DIRECTION_DOWN and await self._mark_busy_pods(
            spec, seen
        ):
            await asyncio.sleep(constants.DELETION_COST_SETTLE_SECONDS)
        await actuator.set_replicas(decision.target)
        self.state.last_scale_time = now
        self.last_scale_time = now_iso()
        metrics.SCALE_EVENTS.labels(*self.labels, decision.direction).inc()
        kopf.info(
            body,
            reason="ScaledUp" if decision.direction == constants.DIRECTION_UP else "ScaledDown",
            message=f"{current} -> {decision.target} replicas: {decision.reason}",
        )
        logger.info(
            "%s/%s: scaled %s from %d to %d: %s",
            *self.labels,
            decision.direction,
            current,
            decision.target,
            decision.reason,
        )
        return decision

    async def _mark_busy_pods(self, spec: ConsumerSpec, seen: Seen) -> bool:
        """Annotate each pod with its pending count, so a scale-in removes idle pods first;
        True when some pod was annotated."""
        if not seen.observation.consumers:
            return False
        pods = await self._pods(spec, seen.actuator, seen.observation)
        marked = False
        for pod, cost in deletion_costs(seen.observation.consumers, pods).items():
            patch = {"metadata": {"annotations": {constants.POD_DELETION_COST: str(cost)}}}
            try:
                await self.runtime.kube.merge_patch(f"{pods_path(spec.namespace)}/{pod}", patch)
                marked = True
            except KubeError as exc:
                if exc.status != 404:  # a pod that just went needs no cost
                    raise
        return marked

    def _recovered(self, body: kopf.Body) -> None:
        """A poll went through: end a failure streak (with an Event) and its backoff."""
        if self.failing is not None:
            kopf.info(body, reason="Recovered", message=f"polling again after: {self.failing}")
            logger.info("%s/%s: recovered", *self.labels)
            self.failing = None
        self.backoff.reset()

    async def _report(
        self,
        body: kopf.Body,
        seen: Seen,
        moves: Moves,
        decision: Decision,
        rates: Rates,
    ) -> None:
        """Metrics and the status subresource."""
        observation = seen.observation
        replicas = decision.target
        consumers = len(observation.consumers) - len(moves.reclaimed.removed)
        metrics.GROUP_LAG.labels(*self.labels).set(observation.lag)
        metrics.GROUP_PENDING.labels(*self.labels).set(moves.pending)
        metrics.GROUP_CONSUMERS.labels(*self.labels).set(consumers)
        metrics.DESIRED_REPLICAS.labels(*self.labels).set(decision.desired)
        metrics.REPLICAS.labels(*self.labels).set(replicas)
        backlog = observation.lag + moves.pending
        drain = rates.drain_seconds(backlog, replicas)
        for gauge, value in (
            (metrics.ARRIVAL_RATE, rates.arrival),
            (metrics.SERVICE_RATE, rates.service),
            (metrics.REPLICA_THROUGHPUT, rates.per_replica),
            (metrics.PREDICTED_DRAIN_SECONDS, drain),
        ):
            if value is not None:
                gauge.labels(*self.labels).set(value)
        await self._write(
            {
                "scalingBasis": decision.basis,
                "arrivalRate": _rounded(rates.arrival),
                "serviceRate": _rounded(rates.service),
                "replicaThroughput": _rounded(rates.per_replica),
                # JSON has no infinity: a backlog that never drains at these rates is -1.
                "predictedDrainSeconds": None
                if drain is None
                else (-1 if math.isinf(drain) else _rounded(drain)),
                "replicas": replicas,
                "desiredReplicas": decision.desired,
                "lag": observation.lag,
                "lagEstimated": observation.lag_estimated,
                "pending": moves.pending,
                "consumers": consumers,
                "deadLettered": moves.dead_lettered,
                "deadLetterIdleSeconds": moves.idle_seconds,
                "streams": [
                    {
                        "stream": stream,
                        "lag": part.lag,
                        "lagEstimated": part.lag_estimated,
                        "pending": moves.pending_by_stream[stream],
                    }
                    for stream, part in seen.streams.items()
                ],
                "lastScaleTime": self.last_scale_time,
                "observedGeneration": (body.get("metadata") or {}).get("generation"),
            },
            healthy(
                replicas=replicas,
                backlog=backlog,
                lag_estimated=observation.lag_estimated,
                notes=moves.notes,
            ),
        )

    def _report_moves(
        self, body: kopf.Body, spec: ConsumerSpec, reclaimed: Reclaimed, total: int
    ) -> None:
        """One Event for the moves not yet reported, so the Events add up to the status."""
        unreported = total - self.dead_lettered
        if unreported <= 0:
            return
        counts = ", ".join(f"{n} {r}" for r, n in sorted(reclaimed.dead_lettered.items()))
        targets = sorted({spec.dead_letter_for(stream) for stream in spec.streams})
        message = f"moved {unreported} entries to {', '.join(targets)}"
        earlier = unreported - reclaimed.total
        if reclaimed.total and earlier > 0:
            message += f" ({counts} now; {earlier} by an earlier run that stopped before reporting)"
        elif reclaimed.total:
            message += f" ({counts})"
        else:
            message += " (by an earlier run that stopped before reporting them)"
        kopf.warn(body, reason="DeadLettered", message=message)
        self.dead_lettered = total

    async def _fail(
        self, body: kopf.Body, reason: str, message: str, *, replicas: int | None
    ) -> None:
        if self.failing is None:
            logger.warning("%s/%s: %s", *self.labels, message)
            kopf.warn(body, reason=reason, message=message)
        self.failing = message
        try:
            await self._write({}, degraded(reason, message, replicas=replicas))
        except (KubeError, OSError) as exc:
            logger.warning("%s/%s: cannot write status: %s", *self.labels, exc)

    async def _write(self, fields: dict[str, Any], conditions: list[Condition]) -> None:
        """Merge-patch the status subresource, only when something in it changed."""
        merged = merge_conditions(self.conditions, conditions, now_iso())
        status = {**fields, "conditions": merged}
        comparable = {**status, "conditions": _without_times(merged)}
        if comparable == self.written:
            return
        path = custom_path(self.namespace, self.name, subresource="status")
        await self.runtime.kube.merge_patch(path, {"status": status})
        self.conditions = merged
        self.written = comparable


def _streams_seen(status: Mapping[str, Any], streams: tuple[str, ...]) -> set[str]:
    """The streams an earlier poll saw with their group (listed in the status)."""
    listed = status.get("streams")
    if isinstance(listed, list):
        return {str(item.get("stream")) for item in listed if isinstance(item, Mapping)}
    # A status written before streams were listed: it had one stream, seen if it has a lag.
    return {streams[0]} if "lag" in status and len(streams) == 1 else set()


def _without_times(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "lastTransitionTime"} for item in conditions]


def _rounded(value: float | None) -> float | None:
    """Status numbers to two decimals: enough to read, and a status that changes less often."""
    return None if value is None else round(value, 2)
