"""Names that the consumer, the operator and the CLI share: entry and dead-letter fields, reasons,
the built-in table, HTTP paths."""

from typing import Final

# Stream entries -------------------------------------------------------------------------------
DATA_FIELD: Final = "data"
"""An entry whose payload is JSON keeps it in this field (the common convention)."""
REPLY_TO_FIELD: Final = "reply_to"
"""Handler mode: the stream a reply to this message is written to."""

# Dead letters ---------------------------------------------------------------------------------
DEAD_LETTER_SUFFIX: Final = ":dlq"
X_ORIGINAL_ID: Final = "x-original-id"
X_STREAM: Final = "x-stream"
X_GROUP: Final = "x-group"
X_CONSUMER: Final = "x-consumer"
X_DELIVERIES: Final = "x-deliveries"
X_REASON: Final = "x-reason"
X_ERROR: Final = "x-error"
X_DEAD_LETTERED_AT: Final = "x-dead-lettered-at"
X_REPLAYED_FROM: Final = "x-replayed-from"
DEAD_LETTER_FIELDS: Final = (
    X_ORIGINAL_ID,
    X_STREAM,
    X_GROUP,
    X_CONSUMER,
    X_DELIVERIES,
    X_REASON,
    X_ERROR,
    X_DEAD_LETTERED_AT,
)

REASON_INVALID: Final = "invalid"
REASON_MAX_DELIVERIES: Final = "max-deliveries"
REASON_IDLE: Final = "idle"
REASON_DELETED: Final = "deleted"
REASONS: Final = (REASON_INVALID, REASON_MAX_DELIVERIES, REASON_IDLE, REASON_DELETED)

# The built-in table ---------------------------------------------------------------------------
EVENTS_TABLE: Final = "stream_events"

# HTTP -----------------------------------------------------------------------------------------
PATH_METRICS: Final = "/metrics"
PATH_HEALTHZ: Final = "/healthz"
PATH_READYZ: Final = "/readyz"
