"""`streamscale operate`: the kopf operator with its HTTP port, namespaced or cluster-wide."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import kopf

from streamscale.core import logs
from streamscale.core.serving import HealthServer
from streamscale.core.tasks import stop_on_signals
from streamscale.operator.handlers import Login, default_login, register
from streamscale.operator.reconciling import PeeringMissing, Runtime
from streamscale.operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


QUIET_AT_EXIT = ("kopf.objects", "kopf.activities.cleanup")
"""kopf loggers whose per-handler "... succeeded." lines a normal stop leaves out."""


class QuietStop(logging.Filter):
    """Drop kopf's per-StreamConsumer "succeeded" lines once the operator is exiting.

    A normal stop then logs one line (kopf's "Signal SIGTERM is received. Operator is
    stopping."); warnings and errors during the stop still show.
    """

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime

    def filter(self, record: logging.LogRecord) -> bool:
        exiting = self.runtime.exiting or self.runtime.closed
        return not (
            exiting
            and record.levelno <= logging.INFO
            and record.getMessage().endswith("succeeded.")
        )


async def operate(
    namespaces: Sequence[str] = (),
    all_namespaces: bool = False,
    *,
    settings: OperatorSettings | None = None,
    login: Login = default_login,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    serve_http: bool = True,
) -> None:
    """Run the operator in this event loop until `stop_flag` is set (or SIGINT/SIGTERM).

    Exactly one of `namespaces` (one or more) and `all_namespaces` must be given.
    """
    if bool(namespaces) == bool(all_namespaces):
        raise ValueError("give --namespace NS (one or more) or --all-namespaces, not both")
    settings = settings or OperatorSettings()
    # kopf stops on this flag; the runtime raises it too when it cannot work (see `fatal`).
    stop = stop_flag if stop_flag is not None else asyncio.Event()
    runtime = Runtime(settings, clusterwide=all_namespaces, stop=stop.set)
    registry = kopf.OperatorRegistry()
    register(registry, runtime, login=login)
    quiet = QuietStop(runtime)
    for name in QUIET_AT_EXIT:
        logging.getLogger(name).addFilter(quiet)
    server = HealthServer(settings.http_host, settings.http_port) if serve_http else None
    if server is not None:
        await server.start()
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=all_namespaces,
            namespaces=list(namespaces),
            peering_name=None if settings.standalone else settings.peering_name,
            standalone=settings.standalone,
            priority=settings.priority,
            stop_flag=stop,
            ready_flag=ready_flag,
        )
    finally:
        if server is not None:
            await server.close()
        await runtime.close()
        for name in QUIET_AT_EXIT:
            logging.getLogger(name).removeFilter(quiet)
    if runtime.fatal is not None:
        raise runtime.fatal


def run(namespaces: list[str], all_namespaces: bool) -> None:
    """The entry point of `streamscale operate --namespace NS... | --all-namespaces`.

    Blocks until SIGINT or SIGTERM; kopf then stops the daemons and exits cleanly.
    """
    settings = OperatorSettings()
    logs.configure(settings.log_format, settings.log_level)
    try:
        asyncio.run(_main(namespaces, all_namespaces, settings))
    except PeeringMissing:
        # Already logged with what to do; a traceback would bury it.
        raise SystemExit(1) from None


async def _main(namespaces: list[str], all_namespaces: bool, settings: OperatorSettings) -> None:
    stop = asyncio.Event()
    with stop_on_signals(stop):
        await operate(namespaces, all_namespaces, settings=settings, stop_flag=stop)
