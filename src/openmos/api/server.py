"""HTTP serving shared by every OpenMOS web API (device REST, fleet dashboard, proxy): uvicorn with a cap on
connections and an overall deadline for receiving each request.

uvicorn closes idle keep-alive connections but puts no limit on a request while it arrives: a client sending
its headers one byte every 0.2 s, or a body that never ends, holds a connection (and a slot under the
connection cap) forever. Here each request must be received completely - headers and body - within
``request_deadline_s`` of the connection opening or of the previous response ending, else the connection is
closed (the app, if it was already reading the body, sees ``http.disconnect``). Responses are not limited: a
server-sent events stream lasts as long as its client listens (the apps cap the number of streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

import uvicorn

log = logging.getLogger(__name__)

REQUEST_DEADLINE_S = 10.0
MAX_HTTP_CONNECTIONS = 128  # beyond this uvicorn answers 503 instead of queueing without bound
KEEP_ALIVE_S = 5

if TYPE_CHECKING:
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Protocol
else:
    _Protocol = object


class _RequestDeadline(_Protocol):
    """Mixed into uvicorn's HTTP protocol (h11 or httptools: both keep ``cycle``, ``more_body``, ``loop``)."""

    request_deadline_s: float = REQUEST_DEADLINE_S
    _deadline: asyncio.TimerHandle | None = None
    _armed_for: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._armed_for = self.cycle
        self._deadline = self.loop.call_later(self.request_deadline_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and cycle is not self._armed_for and not cycle.more_body:
            return  # received in time: the response may take as long as it needs
        if not self.transport.is_closing():
            client = self.client[0] if self.client else "?"
            log.warning("HTTP client %s did not send a whole request within %.0f s: connection closed", client,
                        self.request_deadline_s)
            self.transport.close()


def _protocol_class(deadline_s: float) -> type[asyncio.Protocol]:
    """uvicorn's own choice of HTTP implementation ("auto": httptools if installed, else h11), with the deadline."""
    base: type[Any]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    return type(f"Deadline{base.__name__}", (_RequestDeadline, base), {"request_deadline_s": deadline_s})


def http_config(app: Any, host: str, port: int, *, request_deadline_s: float | None = None,
                max_connections: int = MAX_HTTP_CONNECTIONS, **extra: Any) -> uvicorn.Config:
    """The uvicorn configuration every OpenMOS HTTP API runs with (deadline: ``REQUEST_DEADLINE_S`` unless given)."""
    request_deadline_s = REQUEST_DEADLINE_S if request_deadline_s is None else request_deadline_s
    if not request_deadline_s > 0:
        raise ValueError("request_deadline_s must be positive")
    # log_config None: uvicorn's warnings go through the application's logging (with time and level like every
    # other line) instead of its own handler printing "WARNING:  Invalid HTTP request received." bare on stderr.
    options: dict[str, Any] = {"log_level": "warning", "log_config": None, "lifespan": "off",
                               "timeout_keep_alive": KEEP_ALIVE_S,
                               **extra}
    return uvicorn.Config(app, host=host, port=port, http=_protocol_class(request_deadline_s),
                          limit_concurrency=max_connections, **options)


class HttpServer:
    """``app`` served by uvicorn (``http_config``) on a socket bound here, so that a busy port is an ``OSError``
    the caller can report (uvicorn itself would exit the process). ``await start()`` returns once it serves;
    ``await stop()`` gives open requests 5 s to finish."""

    def __init__(self, app: Any, host: str, port: int, *, name: str) -> None:
        self.name = name  # "REST API", in the error when it cannot start
        self.uvicorn = uvicorn.Server(http_config(app, host, port))
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def host(self) -> str:
        return str(self.uvicorn.config.host)

    @property
    def port(self) -> int:
        """The bound port (the configured one before ``start``)."""
        return int(self._socket.getsockname()[1]) if self._socket is not None else self.uvicorn.config.port

    async def start(self) -> None:
        self._socket = socket.create_server((self.host, self.uvicorn.config.port))
        self._task = asyncio.create_task(self.uvicorn.serve(sockets=[self._socket]), name=self.name)
        while not self.uvicorn.started:
            if self._task.done():
                raise OSError(f"{self.name} failed to start: {self._task.exception()!r}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.uvicorn.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        if self._socket is not None:
            self._socket.close()
