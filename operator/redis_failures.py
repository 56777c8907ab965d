"""Why a poll's Redis call failed: Redis unreachable, or Redis answered and refused.

The two need different fixes (the network or the server, versus credentials and ACLs), so they
get distinct condition reasons; which errors are which is decided once, in
`streamscale.core.errors`.
"""

from __future__ import annotations

import dataclasses

from redis.exceptions import RedisClusterException, RedisError

from streamscale.core.errors import is_redis_retryable, redis_denial, redis_wrong_kind
from streamscale.operator.observing import GroupMissing

UNREACHABLE = "RedisUnavailable"
REFUSED = "RedisRefused"
GROUP_MISSING = "GroupMissing"


@dataclasses.dataclass(frozen=True)
class RedisFailure:
    """A condition reason and the message users see."""

    reason: str
    message: str


def classify(exc: BaseException) -> RedisFailure:
    """`RedisUnavailable` when Redis did not answer, `RedisRefused` when it answered no."""
    if isinstance(exc, GroupMissing):
        return RedisFailure(GROUP_MISSING, f"{exc}; replicas left unchanged")
    detail = f"{type(exc).__name__}: {exc}"
    if is_redis_retryable(exc):
        return RedisFailure(
            UNREACHABLE,
            f"Redis unreachable ({detail}); replicas left unchanged, retrying with backoff",
        )
    if (wrong := redis_wrong_kind(exc)) is not None:
        advice = f"{wrong} (in the StreamConsumer's spec.redis or the chart's redis.url)"
    elif redis_denial(exc) is not None:
        advice = (
            "check the operator's Redis user and password and its ACL (docs/security.md lists"
            " the commands the operator needs)"
        )
    else:
        advice = "check the Redis server's state and the StreamConsumer's stream and group"
    return RedisFailure(
        REFUSED,
        f"Redis refused the operator's command ({detail}); replicas left unchanged; {advice}",
    )


FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError, GroupMissing)
"""What a poll catches as a Redis failure (and `classify`s); redis-py's cluster client raises
RedisClusterException, which is no RedisError, when no node answers."""
