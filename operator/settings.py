"""The operator's settings: one typed object built from `STREAMSCALE_*` environment variables."""

from pydantic import Field, SecretStr

from streamscale.core.settings import StreamscaleSettings
from streamscale.operator import constants


class OperatorSettings(StreamscaleSettings):
    """Everything `streamscale operate` needs besides the Kubernetes credentials."""

    redis_url: SecretStr | None = Field(
        None,
        description="Redis URL for StreamConsumers without `spec.redis`; unset: those are "
        "refused with 'no Redis configured' (never a guessed localhost).",
    )
    peering_name: str = Field(
        constants.PEERING_NAME,
        description="kopf peering object: one operator instance acts at a time.",
    )
    standalone: bool = Field(False, description="Skip kopf peering (a single instance for sure).")
    priority: int = Field(0, description="kopf peering priority of this instance.")
    scanning: bool = Field(
        True,
        description="Watch CRDs and namespaces for changes (kopf's scanning); off: discover once.",
    )
    operator_label: str | None = Field(
        None,
        description="Act only on StreamConsumers labelled `streamscale.io/operator: <this>`; "
        "unset: on every one in the watched namespaces. Set when two operators share a namespace.",
    )
    consumer_image: str = Field(
        constants.DEFAULT_IMAGE, description="Consumer image for StreamConsumers without one."
    )
    move_min_idle_seconds: float = Field(
        constants.MIN_MOVE_IDLE_MS / 1000,
        ge=0,
        description="Never dead-letter an entry idle for less: a live consumer may have it.",
    )
    gone_idle_seconds: float | None = Field(
        None,
        ge=0,
        description="Dead-letter a gone consumer's entries once idle this long; default: the "
        "StreamConsumer's idleSeconds, like any entry (live consumers claim them first).",
    )
    max_move_pages: int = Field(
        200, ge=1, description="XPENDING pages of 1000 the mover scans per poll, at most."
    )
    api_cache_seconds: float = Field(
        30.0,
        ge=0,
        description="Re-read a Deployment's replicas and its pod list at least this often.",
    )
    redis_timeout_seconds: float = Field(
        5.0, gt=0, description="Socket timeout of the operator's Redis calls."
    )
    error_backoff_cap_seconds: float = Field(
        30.0, gt=0, description="Longest wait between polls while Redis is unreachable."
    )
