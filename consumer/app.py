"""`streamscale consume`: one consumer process, from start-up to a drained shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any

import prometheus_client
from redis import exceptions as redis_errors

from streamscale.consumer.claiming import Claimer, leave_group
from streamscale.consumer.metrics import ConsumerMetrics
from streamscale.consumer.processing import Processor
from streamscale.consumer.reading import Reader
from streamscale.consumer.settings import ConsumerSettings
from streamscale.consumer.shutdown import Shutdown
from streamscale.consumer.sinks.base import Sink
from streamscale.consumer.sinks.factory import build_sink
from streamscale.core import logs, redis_urls
from streamscale.core.backoff import Backoff, Health
from streamscale.core.deadletter import cluster_problem
from streamscale.core.errors import (
    EXIT_CONFIG,
    REDIS_RETRYABLE,
    ConfigError,
    TransientError,
    redis_denial,
    redis_wrong_kind,
)
from streamscale.core.serving import HealthServer
from streamscale.core.streams import (
    Client,
    by_slot,
    connect,
    ensure_group,
    is_cluster,
    use_read_reply,
)
from streamscale.core.tasks import cancel_all, spawn, stop_on_signals

logger = logging.getLogger("streamscale.consumer")

EXIT_OK = 0


class ConsumerApp:
    """Owns the connections, the HTTP port and the tasks of one consumer process."""

    def __init__(self, settings: ConsumerSettings) -> None:
        self.settings = settings
        url = settings.redis_url.get_secret_value()
        if redis_urls.is_cluster(url):
            check_cluster_names(settings)
        self.redis: Client = connect(url)
        use_read_reply(self.redis)  # the readers take XREADGROUP's entries parsed in one pass
        self.sink: Sink = build_sink(settings, self.redis)
        self.metrics = ConsumerMetrics(
            settings.namespace, settings.name, settings.streams, settings.group
        )
        self.shutdown = Shutdown()
        self.processor = Processor(settings, self.redis, self.sink, self.metrics, self.shutdown)
        self.http = HealthServer(settings.http_host, settings.http_port, ready=self.ready)
        self.started = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    async def ready(self) -> str | None:
        """`/readyz`: Redis and the sink reachable, and the loops running."""
        if not self.started.is_set():
            return "starting"
        if self.processor.group_missing:
            return self.processor.not_consuming
        try:
            # Well within the kubelet's default probe timeout (1 s), with the database's check.
            await asyncio.wait_for(self.redis.ping(), 0.5)
        except TimeoutError:
            return "Redis did not answer within 0.5 s (hung or overloaded)"
        except REDIS_RETRYABLE as exc:
            return f"Redis: {type(exc).__name__}: {exc}"
        return await self.sink.ping()

    def stop(self) -> None:
        """Stop reading; in-flight batches finish until the grace period runs out."""
        if self.shutdown.stop():
            logger.info(
                "stopping: no new reads, finishing in-flight batches (grace %.0fs)",
                self.settings.shutdown_grace_seconds,
            )

    async def run(self) -> int:
        await self.http.start()  # a taken port is a ConfigError naming STREAMSCALE_HTTP_PORT
        try:
            if not await self._start_dependencies():
                return EXIT_OK
            names = self.settings.consumer_names()
            slots = by_slot(self.settings.streams) if is_cluster(self.redis) else [None]
            self._tasks = [
                spawn(
                    Reader(self.processor, name, streams, readers_per_name=len(slots)).run(),
                    f"reader {name}" if streams is None else f"reader {name} {streams[0]}",
                )
                for name in names
                for streams in slots
            ]
            claimer = self.settings.claimer_name()
            self._tasks.append(spawn(Claimer(self.processor, claimer).run(), "claimer"))
            tune_gc()
            self.started.set()
            logger.info(
                "consuming %s as group %r, consumer(s) %s, into %s",
                ", ".join(map(repr, self.settings.streams)), self.settings.group, ", ".join(names),
                type(self.sink).__name__,
            )  # fmt: skip
            await self._wait_and_drain()
            await leave_group(self.processor, [*names, claimer])
            return EXIT_OK
        finally:
            await self._close()

    async def _start_dependencies(self) -> bool:
        """Open the sink and make sure the group exists, retrying until both work or stop."""
        s = self.settings
        backoff = Backoff(base=0.2, cap=10.0)
        sink_health = Health("database", logger)
        redis_health = Health("Redis", logger)
        sink_ready = False
        stream = s.streams[0]
        while not self.shutdown.stopping.is_set():
            try:
                if not sink_ready:
                    await self.sink.start()
                    sink_ready = True
                    sink_health.recovered()
                for stream in s.streams:
                    await ensure_group(self.redis, stream, s.group, s.group_start_id)
                redis_health.recovered()
                return True
            except TransientError as exc:
                sink_health.failed(exc, "starting")
            except REDIS_RETRYABLE as exc:
                # A refusal of the credentials derives from ConnectionError (or a Cluster client
                # wraps it): retrying the same credentials cannot succeed (PostgreSQL's refusal
                # is a config error too).
                denied = redis_denial(exc)
                if denied is not None:
                    raise ConfigError(credentials_refused(denied)) from exc
                if (wrong := redis_wrong_kind(exc)) is not None:
                    raise ConfigError(wrong_kind(wrong)) from exc
                redis_health.failed(exc, "starting")
            except redis_errors.ResponseError as exc:
                if (wrong := redis_wrong_kind(exc)) is not None:
                    raise ConfigError(wrong_kind(wrong)) from exc
                raise ConfigError(redis_refusal(s, stream, exc)) from exc
            await backoff.sleep(self.shutdown.stopping)
        return False

    async def _wait_and_drain(self) -> None:
        workers = list(self._tasks)
        stop_wait = asyncio.ensure_future(self.shutdown.stopping.wait())
        done, _ = await asyncio.wait([*workers, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        if stop_wait not in done:
            # A worker ended without being asked to: that is a bug worth a restart.
            stop_wait.cancel()
            self.stop()
        grace = self.settings.shutdown_grace_seconds
        # Leave a little of the grace period for acks and closing connections.
        _, late = await asyncio.wait(workers, timeout=max(0.5, grace - 2.0))
        if late:
            self.shutdown.expire()
            _, late = await asyncio.wait(late, timeout=1.0)
            if late:
                logger.warning("%d task(s) did not finish in the grace period", len(late))
                await cancel_all(list(late))
        if self.shutdown.broken is not None:
            raise self.shutdown.broken
        for task in workers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError("a consumer task failed") from task.exception()

    async def _close(self) -> None:
        await cancel_all([t for t in self._tasks if not t.done()])
        with contextlib.suppress(Exception):
            await self.sink.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        await self.http.close()


def credentials_refused(exc: BaseException) -> str:
    return (
        f"Redis refused the credentials in STREAMSCALE_REDIS_URL: {exc} Nothing is "
        "consumed; fix the user name and password (or the user's ACL) and start again."
    )


def wrong_kind(reason: str) -> str:
    return f"STREAMSCALE_REDIS_URL does not fit the server: {reason}. Nothing is consumed."


def check_cluster_names(settings: ConsumerSettings) -> None:
    """Refuse, before reading anything, names a Redis Cluster cannot work with: without this
    the first poison message (or every read) would fail with CROSSSLOT."""
    problem = cluster_problem(settings.streams, settings.dead_letter_for, settings.group)
    if problem:
        raise ConfigError(
            f"{problem} (STREAMSCALE_STREAM, STREAMSCALE_DEAD_LETTER_STREAM). Nothing is consumed."
        )


def redis_refusal(
    settings: ConsumerSettings, stream: str, error: redis_errors.ResponseError
) -> str:
    """What a Redis error reply at start-up (setting up `stream`) means, and what to change."""
    text = str(error)  # in a pipeline the reply is prefixed ("Command # 1 (...) ..."): search
    if "WRONGTYPE" in text:
        return (
            f"Redis key {stream!r} is not a stream (it holds another type), so it cannot "
            "be consumed. Set STREAMSCALE_STREAM to the stream's key, or delete that key if it "
            "is left over."
        )
    if "DB index is out of range" in text:
        return (
            "the database number at the end of STREAMSCALE_REDIS_URL does not exist on this "
            "Redis server (it has fewer `databases`); use one it has, e.g. /0."
        )
    return (
        f"Redis refused to set up group {settings.group!r} on stream {stream!r}: {text}."
        " Nothing is consumed; check the Redis user's permissions and the stream key."
    )


def tune_gc() -> None:
    """Keep the garbage collector off the hot path.

    The ~90,000 objects that imports and start-up leave behind live for the whole process, yet
    every full collection walks them again: measured at 15-20% of the consumer's CPU
    (bench/README.md). Freezing them and collecting the young generation less often cut the CPU
    per message by about a quarter with no change in peak RSS. Batches make few reference
    cycles, so the garbage that remains is still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def main(settings: ConsumerSettings) -> int:
    """Run one consumer until SIGTERM or SIGINT; the exit code."""
    try:
        app = ConsumerApp(settings)
    except ConfigError as exc:
        logger.error("cannot start: %s", exc)
        return EXIT_CONFIG
    try:
        # A signal only stops the reads; `run` then drains in-flight batches within the grace.
        with stop_on_signals(app.stop):
            return await app.run()
    except ConfigError as exc:
        logger.error("%s: %s", "stopped" if app.started.is_set() else "cannot start", exc)
        return EXIT_CONFIG


def run(settings: ConsumerSettings) -> int:
    """Blocking entry point used by `streamscale consume` and `python -m streamscale.consumer`."""
    logs.configure(settings.log_format, settings.log_level)
    prometheus_client.disable_created_metrics()  # `_created` series only add noise here
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        return uvloop.run(main(settings))
    except ImportError:
        return asyncio.run(main(settings))
