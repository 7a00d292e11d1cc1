"""One asyncio stream server lifecycle for every listener in the package.

A ``StreamServer`` runs ``handle(reader, writer)`` as one task per connection and keeps track of them. ``stop()``
closes the listener, closes every connection, cancels and awaits every handler, and gives ``wait_closed`` up to
2 s (a peer that never reads must not hang shutdown). Handlers need no bookkeeping of their own: the writer is
closed when the handler returns, and a cancelled handler ends quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from openmos.base.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

CLOSE_TIMEOUT_S = 2.0


class ByteBudget:
    """Bytes a server's connections may be buffering at once for large messages, shared by all of them: each
    connection's own limit bounds one message, this bounds their sum (many peers each sending one large
    message must not add up). ``take(n)`` before reading, ``give(n)`` after; False: refuse the message."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.in_use = 0
        self.refused = 0

    def take(self, n: int) -> bool:
        if self.in_use + n > self.total:
            self.refused += 1
            return False
        self.in_use += n
        return True

    def give(self, n: int) -> None:
        self.in_use -= n


class StreamServer:
    """``port = await server.start(host, port, **start_server_options)``; ``await server.stop()``."""

    def __init__(self, handle: Handler, max_connections: int | None = None) -> None:
        self._handle = handle
        self.max_connections = max_connections  # more connections are closed at once (counted in ``refused``)
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._accepting = False  # False once stop() began: a connection accepted just before is closed at once
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    @property
    def serving(self) -> bool:
        return self._server is not None

    @property
    def connections(self) -> int:
        """Connections whose handler is still running."""
        return len(self._connections)

    async def start(self, host: str, port: int, **options: Any) -> int:
        """Listen on ``host:port`` (0: any free port) and return the bound port."""
        self._accepting = True
        self._server = await asyncio.start_server(self._connection, host, port, **options)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        server, self._server = self._server, None
        self._accepting = False
        if server is not None:
            server.close()
        for writer in list(self._connections.values()):
            writer.close()
        for task in list(self._connections):
            await cancel_and_wait(task)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_S)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or not self._accepting or (
                self.max_connections is not None and len(self._connections) >= self.max_connections):
            self.refused += 1
            if self._accepting and self.refused % 1000 == 1:  # the first, then one line per 1,000
                log.warning("connection from %s refused: %d connections open (the limit); %d refused so far",
                            peer_name(writer), len(self._connections), self.refused)
            writer.close()
            return
        self._connections[task] = writer
        try:
            await self._handle(reader, writer)
        except asyncio.CancelledError:
            pass  # stop() ends every connection
        finally:
            self._connections.pop(task, None)
            writer.close()


def peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
