"""A TCP proxy on 127.0.0.1 that can keep a server's closing from its clients.

A server that ends a connection sends its last words (PostgreSQL's FATAL error) and closes the
socket; a client usually reads both at once. Held, the proxy passes the words on and keeps the
client's side open until `release()`: the client sits between the two for as long as a test
needs, which on a real network happens for a moment only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class HoldingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.closed_by_server = 0
        """Connections the server has closed (and the proxy holds open, until released)."""
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen on a free port, which it returns."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def release(self) -> None:
        """Let the held connections close, and the ones to come close at once."""
        self._released.set()

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await asyncio.open_connection("127.0.0.1", self.target_port)
        upstream = asyncio.create_task(_pipe(client, to_server))
        try:
            await _pipe(server, to_client, before_closing=self._held)
        finally:
            upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upstream

    async def _held(self) -> None:
        self.closed_by_server += 1
        await self._released.wait()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    before_closing: Callable[[], Awaitable[None]] | None = None,
) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    if before_closing is not None:
        await before_closing()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
