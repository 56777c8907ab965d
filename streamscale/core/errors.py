"""The errors every streamscale entry point knows: one root, and which Redis errors to retry.

The CLI turns any `StreamscaleError` into one message and an exit code, never a traceback;
`ConfigError` (exit 2) means the user must change a setting, `Interrupted` (exit 130) that a
signal ended the run, `TransientError` that waiting helps.
"""

from __future__ import annotations

import re

from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

EXIT_FAILED = 1
"""Exit status of a command that ran and failed (Redis unreachable, an entry not replayed)."""
EXIT_CONFIG = 2
"""Exit status of every entry point refusing its configuration (as click does for usage)."""
EXIT_INTERRUPTED = 130
"""Exit status of a run ended early by SIGINT or SIGTERM (the shell's 128 + SIGINT)."""


class StreamscaleError(Exception):
    """Root of the errors streamscale raises on purpose; the message is meant for users."""


class ConfigError(StreamscaleError):
    """A setting the process cannot start with; the message says what to change."""


class Interrupted(StreamscaleError):
    """SIGINT or SIGTERM ended a run early, after it said how far it got (exit 130)."""


class TransientError(StreamscaleError):
    """The destination cannot take anything right now (database down, ...): retry later.

    Never dead-letters: the batch is retried with backoff and nothing is acked meanwhile.
    """


REDIS_CLUSTER_RETRYABLE: tuple[type[BaseException], ...] = (
    ClusterDownError,
    TryAgainError,
    RedisClusterException,
)
"""A Redis Cluster between two states: a failover under way (CLUSTERDOWN), a slot moving
(TRYAGAIN), no reachable node or a slot no node serves yet (redis-py's RedisClusterException,
which also covers SlotNotCoveredError; it also reports multi-key commands across slots, which
streamscale refuses at start-up instead)."""

REDIS_RETRYABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    TryAgainError,
    OSError,
    TimeoutError,
    *REDIS_CLUSTER_RETRYABLE,
)
"""Redis did not answer, is still loading its data, or is in a failover (a demoted master
answers READONLY; a cluster slot in migration TRYAGAIN; see REDIS_CLUSTER_RETRYABLE): retrying
with backoff is all to do. Catch `REDIS_DENIED` first: redis-py derives some refusals from
ConnectionError, and see `redis_denial` for a refusal a Cluster client wraps."""

REDIS_DENIED: tuple[type[BaseException], ...] = (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
)
"""Answers, though redis-py derives some of them from ConnectionError: wrong password or an
ACL that forbids the command. Retrying never helps; the credentials or ACL must change."""


def redis_denial(exc: BaseException) -> BaseException | None:
    """The refusal of credentials or of an ACL behind `exc`, or None.

    Either `exc` itself or, from a Redis Cluster client, its cause: redis-py wraps a refusal met
    while reading the slot map in "Redis Cluster cannot be connected" (RedisClusterException).
    """
    if isinstance(exc, REDIS_DENIED):
        return exc
    if isinstance(exc, RedisClusterException) and isinstance(exc.__cause__, REDIS_DENIED):
        return exc.__cause__
    return None


REDIS_WRONG_KIND: tuple[type[BaseException], ...] = (MovedError, AskError)
"""A Redis Cluster node's redirection, which reaches a client only when its URL is not a
Cluster URL (`redis_wrong_kind` also tells the other cases)."""

_UNKNOWN_COMMAND = re.compile(r"unknown command '([^']+)'", re.IGNORECASE)


def redis_wrong_kind(exc: BaseException) -> str | None:
    """Why the kind of Redis the URL names is not the server's, or None.

    A `redis+cluster://` URL at a server without cluster mode fails to read the slot map, which
    redis-py reports like an unreachable cluster; a plain URL at a Cluster node works for the
    keys that node serves and is redirected (MOVED, ASK) for the others. A
    `redis+sentinel://` URL at a server asks it for SENTINEL, which it does not know; a plain URL
    at a sentinel asks it for stream commands, which a sentinel does not know. None heals by
    retrying: the URL must change.
    """
    if isinstance(exc, RedisClusterException) and "Cluster mode is not enabled" in str(exc):
        return (
            "the server is not a Redis Cluster (cluster mode is not enabled on it); use a "
            "redis:// or rediss:// URL for it (redis+sentinel:// behind Sentinel)"
        )
    if isinstance(exc, REDIS_WRONG_KIND):
        return (
            f"the server is a Redis Cluster node and redirects the command ({exc}); use a "
            "redis+cluster:// or rediss+cluster:// URL"
        )
    unknown = _UNKNOWN_COMMAND.search(str(exc)) if isinstance(exc, ResponseError) else None
    if unknown is None:
        return None
    if unknown[1].upper() == "SENTINEL":
        return (
            "the server is not a Sentinel (it does not know SENTINEL); use a redis:// or "
            "rediss:// URL for it, and redis+sentinel:// with the sentinels' addresses"
        )
    return (
        f"the server does not know {unknown[1].upper()}: a Sentinel answers so (use a "
        "redis+sentinel://<sentinels>/<master-name> URL), and so does a Redis too old for "
        "streams"
    )


def is_redis_retryable(exc: BaseException) -> bool:
    """True when Redis did not answer (retry), False when it answered no (report and stop)."""
    return (
        isinstance(exc, REDIS_RETRYABLE)
        and redis_denial(exc) is None
        and redis_wrong_kind(exc) is None
    )
