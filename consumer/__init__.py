"""The data plane: read a consumer group, decode, sink, ack, dead-letter, metrics, health.

The public API, for handler authors, is what this package exports (`__all__`); everything else
is internal. The internal layers, each importing only those below it (checked by the
import-linter contracts in pyproject.toml):

- `app` (and `__main__`): one process from start-up to a drained shutdown: settings, signals,
  the HTTP port, the tasks;
- `reading` (one loop per consumer name) and `claiming` (the retry path, leaving the group);
- `processing`: one batch from read to ack or dead-letter; with `reading` and `claiming` it
  sees sinks only through `sinks.base`, the contract every sink meets;
- `shutdown`: the one object every loop watches (stop requested, deadline passed, sink broken);
- `sinks.factory` picks a sink: `sinks.sql` (with `sinks.models`, `sinks.rows`) or
  `sinks.handler`;
- `messages`, `metrics`, `settings`, `constants`, over `streamscale.core`.

The consumer never imports kopf, aiohttp, click or rich: its image and start-up stay small.
"""

from streamscale.consumer.messages import Message
from streamscale.consumer.sinks.base import TransientError
from streamscale.consumer.sinks.handler import Reject, batch

__all__ = ["Message", "Reject", "TransientError", "batch"]
