"""Why a poll's Redis call failed: Redis unreachable, or Redis answered and refused.

The two need different fixes (the network or the server, versus credentials and ACLs), so they
get distinct condition reasons. A local classification until the shared one in
`streamscale.core.errors` exists; then this module should point at it.
"""

from __future__ import annotations

import dataclasses

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    NoPermissionError,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamscale.operator.observing import GroupMissing

UNREACHABLE = "RedisUnavailable"
REFUSED = "RedisRefused"
GROUP_MISSING = "GroupMissing"

NOT_ANSWERED = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError, TimeoutError)
"""Redis did not answer (or is still loading its data): retrying is all there is to do."""
DENIED = (AuthenticationError, AuthorizationError, NoPermissionError)
"""Subclasses of the above in redis-py, yet answers: wrong password, or an ACL that forbids."""


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
    if isinstance(exc, NOT_ANSWERED) and not isinstance(exc, DENIED):
        return RedisFailure(
            UNREACHABLE,
            f"Redis unreachable ({detail}); replicas left unchanged, retrying with backoff",
        )
    if isinstance(exc, DENIED):
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


FAILURES = (RedisError, OSError, TimeoutError, GroupMissing)
"""What a poll catches as a Redis failure (and `classify`s)."""
