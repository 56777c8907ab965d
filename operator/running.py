"""`streamscale operate`: the kopf operator with its HTTP port, namespaced or cluster-wide."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

import kopf

from streamscale.core import logs
from streamscale.core.serving import HealthServer
from streamscale.operator.handlers import Login, default_login, register
from streamscale.operator.reconciling import Runtime
from streamscale.operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


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
    runtime = Runtime(settings)
    registry = kopf.OperatorRegistry()
    register(registry, runtime, login=login)
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
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        if server is not None:
            await server.close()
        await runtime.close()


def run(namespaces: list[str], all_namespaces: bool) -> None:
    """The entry point of `streamscale operate --namespace NS... | --all-namespaces`.

    Blocks until SIGINT or SIGTERM; kopf then stops the daemons and exits cleanly.
    """
    settings = OperatorSettings()
    logs.configure(settings.log_format, settings.log_level)
    asyncio.run(_main(namespaces, all_namespaces, settings))


async def _main(namespaces: list[str], all_namespaces: bool, settings: OperatorSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await operate(namespaces, all_namespaces, settings=settings, stop_flag=stop)
