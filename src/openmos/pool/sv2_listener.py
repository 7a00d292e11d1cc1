"""The server side of the pool's encrypted Stratum V2 sub-protocol ports (job declaration, template distribution).

``Sv2Listener`` owns what those servers share: the identity signed by the pool's authority key, the listener,
the Noise handshake, and each connection's receive loop -- messages go to ``_dispatch`` until it returns False,
malformed ones are counted in ``protocol_errors`` and end the connection after ``MAX_BAD_MESSAGES`` (or at once
before ``SetupConnection``), a connection silent for ``_timeout`` is closed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from openmos.base.server import StreamServer
from openmos.stratum.v2.codec import Sv2CodecError
from openmos.stratum.v2.messages import Message, SetupConnection
from openmos.stratum.v2.noise import KeyPair, NoiseError, issue_server_identity
from openmos.stratum.v2.transport import Sv2Connection, accept_connection

log = logging.getLogger(__name__)

MAX_BAD_MESSAGES = 10


@dataclass(eq=False)
class ServedConnection:
    conn: Sv2Connection
    setup: SetupConnection | None = None
    bad: int = 0


S = TypeVar("S", bound=ServedConnection)


class Sv2Listener(Generic[S]):
    """``await start()``; ``await stop()``. Subclasses say how a connection starts, waits and is answered."""

    name: ClassVar[str]  # in log lines
    max_payload: ClassVar[int]

    def __init__(self, authority_secret: bytes, host: str, port: int, setup_timeout: float) -> None:
        self.authority = KeyPair.from_secret(authority_secret)
        self.static, self.certificate = issue_server_identity(authority_secret, 86_400)
        self.host, self.port, self.setup_timeout = host, port, setup_timeout
        self.protocol_errors = 0
        self._listener = StreamServer(self._handle)

    async def start(self) -> None:
        self.port = await self._listener.start(self.host, self.port, reuse_address=True)

    async def stop(self) -> None:
        await self._listener.stop()

    def _opened(self, conn: Sv2Connection) -> S:
        """The state of a connection that completed the handshake."""
        raise NotImplementedError

    def _timeout(self, state: S) -> float | None:
        """How long the connection may stay silent now (None: for ever)."""
        raise NotImplementedError

    def _dispatch(self, state: S, msg: Message) -> bool:
        """Answer one message; False ends the connection (after what was written is sent)."""
        raise NotImplementedError

    def _closed(self, state: S) -> None:
        """The connection has ended."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state: S | None = None
        try:
            conn = await accept_connection(reader, writer, self.static, self.certificate,
                                           timeout=self.setup_timeout, max_payload=self.max_payload)
            state = self._opened(conn)
            while True:
                try:
                    msg = await asyncio.wait_for(conn.recv(), self._timeout(state))
                except Sv2CodecError as exc:
                    self.protocol_errors += 1
                    state.bad += 1
                    log.warning("%s: malformed message from %s: %s", self.name, conn.peer, exc)
                    if state.bad >= MAX_BAD_MESSAGES or state.setup is None:
                        return
                    continue
                go_on = msg is None or self._dispatch(state, msg)
                await writer.drain()
                if not go_on:
                    return
        except (NoiseError, TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            log.info("%s: connection ended: %s", self.name, exc or type(exc).__name__)
        finally:
            if state is not None:
                self._closed(state)
