"""One small HTTP port per process: `/metrics`, `/healthz`, `/readyz`.

A hand-rolled asyncio server keeps the image free of a web framework; it answers GET and HEAD
with `Connection: close`, which is all probes and Prometheus need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from streamscale.core.constants import PATH_HEALTHZ, PATH_METRICS, PATH_READYZ
from streamscale.core.errors import ConfigError

logger = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str | None]]
"""A readiness check: None when ready, else what is wrong."""


class HealthServer:
    """Serves metrics from `registry`, liveness from `alive()` and readiness from `ready()`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ready: Check | None = None,
        alive: Check | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.host = host
        self.port = port
        self.ready = ready
        self.alive = alive
        self.registry = registry
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on host:port (port 0: any free one, logged); a port in use is a ConfigError."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve /metrics, /healthz and /readyz on {self.host}:{self.port}:"
                f" {exc.strerror or exc}. Another streamscale process (or another program) may"
                " hold the port: set STREAMSCALE_HTTP_PORT to a free port, or 0 for any free one"
            ) from None
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        logger.info("serving /metrics, /healthz and /readyz on %s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, _, rest = request.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0].decode("latin-1")
            status, ctype, body = await self._route(path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(head if method == b"HEAD" else head + body)
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _route(self, path: str) -> tuple[str, str, bytes]:
        if path == PATH_METRICS:
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in (PATH_HEALTHZ, PATH_READYZ):
            check = self.alive if path == PATH_HEALTHZ else self.ready
            problem = await check() if check is not None else None
            if problem is None:
                return "200 OK", "text/plain; charset=utf-8", b"ok\n"
            return "503 Service Unavailable", "text/plain; charset=utf-8", problem.encode() + b"\n"
        return "404 Not Found", "text/plain; charset=utf-8", b"not found\n"
