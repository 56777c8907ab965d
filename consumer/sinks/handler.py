"""Handler mode: decoded messages go to a Python callable, and its replies go back to Redis.

`STREAMSCALE_HANDLER=module:function` names the callable. It may be a plain function or a
coroutine function, and it takes either one message or a whole batch:

- **single** (the default): `handle(message: Message) -> reply | None`, called once per message,
  up to `max_inflight` calls at a time;
- **batch**: `handle(messages: list[Message]) -> replies | None`, called once per batch. A
  handler is a batch handler when it is decorated with `@batch`, or when the annotation of its
  first parameter is a `list`/`Sequence`/`Iterable` (of anything). Nothing else is guessed: a
  batch handler without either marker would be called once per message.

Sync handlers run in a pool of `max_inflight` threads, so they never stall the event loop.
Every call, single or batch, first takes a slot of the `max_inflight` semaphore and, when
`rate_limit` is set, a token of a calls-per-second limiter: a handler that calls an outside API
never has more than `max_inflight` requests open at once nor makes more than `rate_limit` calls
per second.

Outcomes (the runner acks only what the handler finished):

- returns normally: done (acked); a returned value that is not None is a reply;
- raises `Reject`: the message can never succeed; it is dead-lettered at once as `invalid`;
- raises `TransientError`: the whole batch waits and is retried with backoff (the outside
  service is down: stop calling it for everyone);
- raises anything else: that message stays pending, is redelivered through the claim path, and
  is dead-lettered as `max-deliveries` once it has been delivered too often.

A batch handler answers per message by returning a list aligned with its input, or a mapping of
message ID to outcome; each element is a reply, None (no reply), or an exception instance
(`Reject(...)` or any other exception, with the meanings above). Raising from a batch handler
applies to every message of the batch.

Replies: a reply goes to the stream named by the message's `reply_to` field (a raw field of the
entry, else a `reply_to` key of its JSON payload), as an entry with the reply as JSON in `data`
and the original entry ID in `in_reply_to`. This is the shared-input-queue / per-user-response
pattern: many users write to one stream, any worker handles any message, and each user reads
only their own response stream. Delivery is at least once, so after a crash between the reply
and the ack a message can be answered twice: clients deduplicate on `in_reply_to`.
"""

from __future__ import annotations

import asyncio
import collections.abc
import dataclasses
import decimal
import inspect
import logging
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
import pydantic

from streamscale.consumer.messages import Message
from streamscale.consumer.settings import ConsumerSettings
from streamscale.consumer.sinks.base import SinkResult
from streamscale.core.constants import DATA_FIELD, REPLY_TO_FIELD
from streamscale.core.errors import REDIS_RETRYABLE, ConfigError, TransientError
from streamscale.core.imports import import_object
from streamscale.core.streams import Client, StreamId

logger = logging.getLogger(__name__)

IN_REPLY_TO_FIELD = "in_reply_to"
"""A reply entry's field holding the ID of the message it answers."""
REPLY_MAXLEN = 10_000
"""Reply streams are trimmed (approximately) to this many entries: a user who never reads
their responses must not grow Redis without bound."""
BATCH_MARKER = "__streamscale_batch__"

F = TypeVar("F", bound=Callable[..., Any])


class Reject(Exception):  # the name says what the handler does with the message
    """Raise from a handler: this message can never succeed; dead-letter it now as `invalid`."""


class HandlerError(ConfigError):
    """The handler named in the settings cannot be used; the text says why and what to do."""


def batch(func: F) -> F:
    """Mark a handler as a batch handler: it receives `list[Message]` and is called per batch."""
    setattr(func, BATCH_MARKER, True)
    return func


def load(path: str) -> Callable[..., Any]:
    """Import `module:attribute` (dots allowed after the colon); raise HandlerError if unusable."""
    try:
        target = import_object(path, "handler")
    except ConfigError as exc:
        raise HandlerError(
            f"{exc}; write it as `module:function`, e.g. `examples.ai_service:handle`"
        ) from exc
    if not callable(target):
        raise HandlerError(f"handler {path!r} is a {type(target).__name__}, not a callable")
    return typing.cast(Callable[..., Any], target)


def is_batch_handler(func: Callable[..., Any]) -> bool:
    """The documented rule: `@batch`, or a first parameter annotated as a list/sequence."""
    if getattr(func, BATCH_MARKER, False):
        return True
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False
    if not params:
        return False
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations simply do not mark a batch
        return False
    hint = hints.get(params[0].name)
    origin = typing.get_origin(hint) or hint
    return (
        isinstance(origin, type)
        and issubclass(origin, (list, collections.abc.Sequence, collections.abc.Iterable))
        and origin not in (str, bytes, dict, collections.abc.Mapping)
    )


def _is_async(func: Callable[..., Any]) -> bool:
    call = getattr(func, "__call__", None)  # noqa: B004 -- async callable objects count too
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(call)


class RateLimiter:
    """At most `rate` acquisitions per second, evenly spaced (no bursts above one call)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self.clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = self.clock()
            if self._next > now:
                await asyncio.sleep(self._next - now)
                now = self.clock()
            self._next = max(now, self._next) + self.interval


@dataclasses.dataclass(frozen=True)
class Reply:
    """A reply to write: the stream, the JSON body and the message it answers."""

    stream: str
    body: bytes
    in_reply_to: StreamId


HANDLER_FAILURES = (Exception, SystemExit)
"""What a handler call may raise as that message's failure. SystemExit too: a handler that
calls sys.exit() would otherwise end the whole consumer with a traceback."""


def describe(error: BaseException) -> str:
    """`Type: message`, as dead-letter entries and log lines show a handler's error."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _jsonable(value: Any) -> Any:
    """Reply values orjson does not know; anything else is an error, never its repr."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def reply_stream(message: Message) -> str | None:
    """Where replies to `message` go: its raw `reply_to` field, else its payload's `reply_to`."""
    raw = message.field(REPLY_TO_FIELD)
    if raw:
        return raw
    value = (message.payload or {}).get(REPLY_TO_FIELD)
    return value if isinstance(value, str) and value else None


class HandlerSink:
    """The Sink of handler mode (see the module docstring for the contract with handlers)."""

    def __init__(
        self,
        settings: ConsumerSettings,
        redis: Client,
        func: Callable[..., Any] | None = None,
    ) -> None:
        if func is None and not settings.handler:
            raise HandlerError("handler mode needs STREAMSCALE_HANDLER=module:function")
        self.settings = settings
        self.redis = redis
        self.func = func if func is not None else load(settings.handler or "")
        self.is_batch = is_batch_handler(self.func)
        self.is_async = _is_async(self.func)
        self.semaphore = asyncio.Semaphore(settings.max_inflight)
        self.limiter = RateLimiter(settings.rate_limit) if settings.rate_limit else None
        self.inflight = 0
        """Handler calls running right now (for metrics and tests)."""
        self.peak_inflight = 0
        self._warned_no_reply_to = False
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Nothing to connect: the handler was imported (and checked) when the sink was made."""
        logger.info(
            "handler mode: %s (%s, %s), at most %d calls in flight%s",
            self.settings.handler or getattr(self.func, "__qualname__", repr(self.func)),
            "batch" if self.is_batch else "one message per call",
            "async" if self.is_async else "sync, in threads",
            self.settings.max_inflight,
            f", {self.settings.rate_limit:g} calls/s" if self.limiter else "",
        )

    async def ping(self) -> None:
        """A handler has no connection of ours to check."""
        return None

    async def close(self) -> None:
        """Release the sync handler's threads (the Redis client belongs to the runner)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _call(self, arg: Any) -> Any:
        async with self.semaphore:
            if self.limiter is not None:
                await self.limiter.acquire()
            self.inflight += 1
            self.peak_inflight = max(self.peak_inflight, self.inflight)
            try:
                if self.is_async:
                    return await self.func(arg)
                if self._executor is None:
                    # Its own pool, as large as the cap: the loop's default pool has only
                    # min(32, cpus + 4) threads and would quietly lower MAX_INFLIGHT.
                    self._executor = ThreadPoolExecutor(
                        self.settings.max_inflight, thread_name_prefix="handler"
                    )
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, self.func, arg)
            finally:
                self.inflight -= 1

    async def _call_one(self, message: Message) -> Any:
        try:
            return await self._call(message)
        except TransientError:
            raise
        except HANDLER_FAILURES as exc:  # any handler failure is that message's outcome
            return exc

    async def write(self, messages: list[Message]) -> SinkResult:
        """Call the handler, write the replies, and say which messages failed."""
        if not messages:
            return SinkResult()
        outcomes: list[Any]
        if self.is_batch:
            try:
                returned = await self._call(list(messages))
            except TransientError:
                raise
            except HANDLER_FAILURES as exc:  # applies to every message of the batch
                outcomes = [exc] * len(messages)
            else:
                outcomes = self._spread(messages, returned)
        else:
            outcomes = list(await asyncio.gather(*(self._call_one(m) for m in messages)))
        result = SinkResult()
        replies: list[Reply] = []
        failures: dict[str, int] = {}
        for message, outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, Reject):
                result.rejected[message.id] = str(outcome) or "rejected by the handler"
            elif isinstance(outcome, BaseException):
                result.retry.add(message.id)
                error = describe(outcome)
                result.errors[message.id] = error
                failures[error] = failures.get(error, 0) + 1
            elif outcome is not None:
                reply = self._reply(message, outcome, result)
                if reply is not None:
                    replies.append(reply)
        if failures:
            # One line per batch, not per message: a broken handler would flood the log.
            logger.warning(
                "handler failed on %d of %d messages (left pending, redelivered later): %s",
                len(result.retry), len(messages),
                "; ".join(f"{n} x {error}" for error, n in failures.items()),
            )  # fmt: skip
        await self._send(replies, result)
        return result

    def _spread(self, messages: Sequence[Message], returned: Any) -> list[Any]:
        """A batch handler's return value as one outcome per message."""
        if returned is None:
            return [None] * len(messages)
        if isinstance(returned, Mapping):
            return [returned.get(m.id) for m in messages]
        if isinstance(returned, Sequence) and not isinstance(returned, (str, bytes)):
            if len(returned) != len(messages):
                error = TypeError(
                    f"batch handler returned {len(returned)} results for {len(messages)} messages"
                )
                return [error] * len(messages)
            return list(returned)
        error = TypeError(
            "a batch handler returns None, a list aligned with its input, or a mapping"
            f" of message ID to reply; got {type(returned).__name__}"
        )
        return [error] * len(messages)

    def _reply(self, message: Message, value: Any, result: SinkResult) -> Reply | None:
        stream = reply_stream(message)
        if stream is None:
            if not self._warned_no_reply_to:
                self._warned_no_reply_to = True
                logger.warning(
                    "the handler returned a reply to %s, which has no `%s` field: replies to"
                    " messages without one are dropped (logged once)",
                    message.id,
                    REPLY_TO_FIELD,
                )
            return None
        try:
            body = orjson.dumps(value, default=_jsonable)
        except TypeError as exc:
            # Retrying would call the handler again for the same reply: dead-letter, with why.
            result.rejected[message.id] = (
                f"the handler's reply cannot be sent to {stream!r}: it is not JSON-serialisable"
                f" ({exc}); return dicts, lists, strings, numbers, datetimes or pydantic models"
            )
            return None
        return Reply(stream, body, message.id)

    async def _send(self, replies: list[Reply], result: SinkResult) -> None:
        """XADD the replies in one round trip; Redis down makes the whole batch wait."""
        if not replies:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for reply in replies:
                    pipe.xadd(
                        reply.stream,
                        {DATA_FIELD: reply.body, IN_REPLY_TO_FIELD: reply.in_reply_to},
                        maxlen=REPLY_MAXLEN,
                        approximate=True,
                    )
                answers = await pipe.execute(raise_on_error=False)
        except REDIS_RETRYABLE as exc:
            raise TransientError(f"cannot write replies to Redis: {exc}") from exc
        for reply, answer in zip(replies, answers, strict=True):
            if isinstance(answer, Exception):
                # e.g. WRONGTYPE: `reply_to` names a key that is not a stream; retrying cannot help.
                result.rejected[reply.in_reply_to] = (
                    f"cannot write the reply to {reply.stream!r}: {answer}"
                )
