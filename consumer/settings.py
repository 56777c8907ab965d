"""The consumer's settings: one typed object built from `STREAMSCALE_*` environment variables."""

import os
import socket

from pydantic import Field, SecretStr, field_validator, model_validator

from streamscale.core.constants import DEAD_LETTER_SUFFIX
from streamscale.core.settings import REDIS_URL_HELP, StreamscaleSettings, check_url
from streamscale.core.shards import shard_streams


def default_consumer_name() -> str:
    """`$POD_NAME` (the Downward API), else the host name."""
    return os.environ.get("POD_NAME") or socket.gethostname()


class ConsumerSettings(StreamscaleSettings):
    """Everything `streamscale consume` needs; secrets may also come from files (`*_FILE`)."""

    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"), description=REDIS_URL_HELP)
    database_url: SecretStr = Field(
        SecretStr("sqlite:///streamscale.db"),
        description="postgresql://... (asyncpg) or sqlite:///path (the embedded default).",
    )
    stream: str = Field(
        "events",
        min_length=1,
        description="The stream to read; several streams: their names separated by commas.",
    )
    shards: int = Field(
        1,
        ge=1,
        le=1024,
        description="The stream is sharded: read its shards `{stream:0}` .. `{stream:N-1}`.",
    )
    group: str = Field(
        "streamscale", min_length=1, description="The consumer group to read through."
    )
    consumer: str = Field(
        default_factory=default_consumer_name,
        min_length=1,
        description="This process's consumer name; defaults to $POD_NAME, then the host name.",
    )
    model: str | None = Field(None, description="SQLModel table class, `module:Class`.")
    handler: str | None = Field(None, description="Python handler, `module:function`.")
    batch_size: int = Field(500, ge=1, le=100_000, description="XREADGROUP COUNT.")
    batch_max_bytes: int = Field(
        32 * 1_048_576,
        ge=1024,
        description="Byte budget of one read (per reader): fewer entries are read when they are "
        "large, so memory stays bounded.",
    )
    block_ms: int = Field(1000, ge=1, description="XREADGROUP BLOCK in milliseconds.")
    concurrency: int = Field(
        3, ge=1, le=64, description="Reader coroutines; each is consumer `<name>-<n>` when > 1."
    )
    claim_idle_ms: int = Field(
        30_000, ge=100, description="Claim other consumers' entries idle longer than this."
    )
    claim_interval_ms: int = Field(5_000, ge=100, description="How often to look for them.")
    max_deliveries: int = Field(
        5, ge=1, description="Dead-letter an entry instead of delivering it more often."
    )
    max_message_bytes: int = Field(
        1_048_576, ge=64, description="Larger messages are dead-lettered as invalid."
    )
    dead_letter_stream: str | None = Field(
        None,
        min_length=1,
        description="Defaults to `<stream>:dlq` (one per stream when there are several).",
    )
    group_start_id: str = Field("0", description="Where a newly created group starts reading.")
    max_inflight: int = Field(64, ge=1, description="Handler mode: concurrent handler calls.")
    rate_limit: float | None = Field(
        None, gt=0, description="Handler mode: at most this many handler calls per second."
    )
    shutdown_grace_seconds: float = Field(
        25.0, gt=0, description="SIGTERM: finish the in-flight batch within this time."
    )
    namespace: str = Field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE", ""),
        description="Metric label `namespace` (the StreamConsumer's namespace).",
    )
    name: str = Field(
        "", description="Metric label `name` (the StreamConsumer); defaults to group."
    )
    pool_size: int = Field(4, ge=1, description="Database connections.")
    database_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A database call unanswered this long has failed: a hung server is reported.",
    )
    add_missing_columns: bool = Field(
        False,
        description="Add model columns an existing table lacks (nullable) instead of refusing.",
    )

    @field_validator("database_url")
    @classmethod
    def _parsable(cls, value: SecretStr) -> SecretStr:
        check_url(value.get_secret_value(), "the database URL")
        return value

    @field_validator("stream")
    @classmethod
    def _stream_names(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",")]
        if not all(names):
            raise ValueError(f"{value!r} has an empty stream name; separate names by one comma")
        if len(set(names)) != len(names):
            raise ValueError(f"{value!r} names a stream twice")
        return ",".join(names)

    @model_validator(mode="after")
    def _defaults(self) -> "ConsumerSettings":
        if self.model and self.handler:
            raise ValueError("set STREAMSCALE_MODEL or STREAMSCALE_HANDLER, not both")
        if self.shards > 1 and "," in self.stream:
            raise ValueError(
                "STREAMSCALE_SHARDS shards one logical stream: set STREAMSCALE_STREAM to its name"
                " (the shards are `{name:0}` .. `{name:N-1}`), not to several streams"
            )
        if self.dead_letter_stream and len(self.streams) > 1:
            raise ValueError(
                "STREAMSCALE_DEAD_LETTER_STREAM names one stream, but several streams are read: "
                "unset it, each stream then has its own `<stream>:dlq`"
            )
        if not self.name:
            self.name = self.group
        return self

    @property
    def streams(self) -> list[str]:
        """The streams to read, in the order given (one, usually), or every shard's."""
        if self.shards > 1:
            return shard_streams(self.stream, self.shards)
        return self.stream.split(",")

    def dead_letter_for(self, stream: str) -> str:
        """The dead-letter stream of `stream`: its own `<stream>:dlq`, unless one is configured."""
        return self.dead_letter_stream or stream + DEAD_LETTER_SUFFIX

    @property
    def dead_letter(self) -> str:
        """The dead-letter stream's key (of the first stream, when there are several)."""
        return self.dead_letter_for(self.streams[0])

    def claimer_name(self) -> str:
        """The retry path's own consumer name (`<name>-0`), apart from every reader's.

        Sharing a reader's name would let that reader's re-read of its own pending list (after
        a Redis error) take entries the claimer is still processing, and raise their delivery
        counts past the limit while they are being stored.
        """
        return f"{self.consumer}-0"

    def consumer_names(self) -> list[str]:
        """One consumer name per reader coroutine."""
        if self.concurrency == 1:
            return [self.consumer]
        return [f"{self.consumer}-{n}" for n in range(1, self.concurrency + 1)]
