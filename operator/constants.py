"""Every name the operator shares with the CRD, the chart, dashboards and alerts, in one place."""

from typing import Final

# The custom resource --------------------------------------------------------------------------
GROUP: Final = "streamscale.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "streamconsumers"
KIND: Final = "StreamConsumer"
SHORT_NAME: Final = "stc"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"
FINALIZER: Final = "streamscale.io/operator"
OPERATOR_LABEL: Final = "streamscale.io/operator"
"""With STREAMSCALE_OPERATOR_LABEL set, an operator acts only on StreamConsumers labelled so."""
PEERING_NAME: Final = "streamscale"
"""kopf peering object: only the instance with the highest priority acts."""

# The consumer Deployment ----------------------------------------------------------------------
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
CONSUMER_APP: Final = "streamscale-consumer"
MANAGED_BY: Final = "streamscale-operator"
CONTAINER_NAME: Final = "consumer"
METRICS_PORT: Final = 8080
METRICS_PORT_NAME: Final = "metrics"
RUN_AS_USER: Final = 65532
TERMINATION_GRACE_SECONDS: Final = 30
DEFAULT_IMAGE: Final = "streamscale:latest"
TMP_SIZE_LIMIT: Final = "128Mi"
"""The consumer's writable /tmp (the root filesystem is read-only): bounded, so a runaway writer
is evicted instead of filling the node's disk."""

# Conditions and status ------------------------------------------------------------------------
CONDITION_READY: Final = "Ready"
CONDITION_ACTIVE: Final = "Active"
CONDITION_DEGRADED: Final = "Degraded"

# Scaling defaults (the CRD's defaults repeat them) ----------------------------------------------
DEFAULT_MIN_REPLICAS: Final = 0
DEFAULT_MAX_REPLICAS: Final = 10
DEFAULT_BACKLOG_PER_REPLICA: Final = 1000
DEFAULT_ACTIVATION_BACKLOG: Final = 0
DEFAULT_POLL_SECONDS: Final = 5.0
DEFAULT_STABILIZATION_SECONDS: Final = 60.0
DEFAULT_SCALE_DOWN_FRACTION: Final = 0.5
"""One scale-down step removes at most this share of the replicas, rounded down (at least one)."""
DEFAULT_MAX_DELIVERIES: Final = 5
DEFAULT_IDLE_SECONDS: Final = 300
DIRECTION_UP: Final = "up"
DIRECTION_DOWN: Final = "down"
POD_DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
DELETION_COST_SETTLE_SECONDS: Final = 0.5
"""Between writing the deletion costs and lowering the replicas: the ReplicaSet controller picks
the pods to delete from its watch cache, which must have seen the new costs first."""
"""Set on consumer pods before a scale-in: the ReplicaSet deletes the cheapest pods first."""
MODE_BACKLOG: Final = "backlog"
"""desired = ceil(backlog / backlogPerReplica): the default."""
MODE_DRAIN_TIME: Final = "drainTime"
"""desired = ceil((arrival rate + backlog / targetDrainSeconds) / per-replica throughput)."""
MODES: Final = (MODE_BACKLOG, MODE_DRAIN_TIME)

# Dead-letter mover ----------------------------------------------------------------------------
PENDING_PAGE: Final = 1000
"""XPENDING page size: one page feeds one dead-letter script call."""
MIN_MOVE_IDLE_MS: Final = 5_000
"""Never move an entry idle for less than this: a live consumer may have just taken it.
Consumers renew their lease on in-flight entries at least every 2 s, well inside it."""


# Metrics (prefix streamscale_) ----------------------------------------------------------------
GROUP_LAG: Final = "streamscale_group_lag"
GROUP_PENDING: Final = "streamscale_group_pending"
GROUP_CONSUMERS: Final = "streamscale_group_consumers"
DESIRED_REPLICAS: Final = "streamscale_desired_replicas"
REPLICAS: Final = "streamscale_replicas"
DEAD_LETTERED_TOTAL: Final = "streamscale_dead_lettered"  # prometheus-client appends _total
SCALE_EVENTS_TOTAL: Final = "streamscale_scale_events"  # prometheus-client appends _total
POLL_SECONDS: Final = "streamscale_poll_seconds"
ARRIVAL_RATE: Final = "streamscale_arrival_rate"
SERVICE_RATE: Final = "streamscale_service_rate"
REPLICA_THROUGHPUT: Final = "streamscale_replica_throughput"
PREDICTED_DRAIN_SECONDS: Final = "streamscale_predicted_drain_seconds"
