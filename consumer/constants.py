"""The consumer's own names: the identity column and its metrics.

Names shared with the operator and the CLI live in `streamscale.core.constants`.
"""

from typing import Final

# Sinks ----------------------------------------------------------------------------------------
STREAM_ID_COLUMN: Final = "stream_id"

# Metrics (prefix streamscale_) ----------------------------------------------------------------
METRIC_PREFIX: Final = "streamscale_"
MESSAGES_TOTAL: Final = "streamscale_messages"  # prometheus-client appends _total
BATCH_SECONDS: Final = "streamscale_batch_seconds"
SINK_SECONDS: Final = "streamscale_sink_seconds"
END_TO_END_SECONDS: Final = "streamscale_end_to_end_seconds"
INFLIGHT_MESSAGES: Final = "streamscale_inflight_messages"
GROUP_MISSING: Final = "streamscale_group_missing"
"""1 while the group was destroyed on a stream that still has entries (consuming stopped)."""
OUTCOME_STORED: Final = "stored"
OUTCOME_DEAD_LETTERED: Final = "dead_lettered"
OUTCOME_RETRIED: Final = "retried"
