"""The server side of the pool's encrypted Stratum V2 ports (mining, job declaration, template distribution).

``Sv2Listener`` owns what those servers share: the identity signed by the pool's authority key, the listener,
the Noise handshake (failures counted in ``handshake_failures``), and each connection's receive loop --
messages go to ``_dispatch`` until it returns False; malformed ones, and those the port does not take
(``_unexpected``), are counted in ``protocol_errors`` and end the connection after ``MAX_BAD_MESSAGES`` (a
malformed one at once before ``SetupConnection``); a MAC failure or a refused frame ends it at once; a
connection silent for ``_timeout`` is closed.

Every peer is hostile until set up: ``SetupConnection`` must come within ``setup_timeout`` of the handshake
(frames of unknown extensions do not extend it), no frame before it may be larger than ``SetupConnection``
can be, later frames no larger than what the protocol lets the peer send next (``_max_payload``), large
frames of all connections together stay within ``budget_bytes``, and at most ``max_connections`` are open.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from openmos.base.logs import LogLimiter
from openmos.base.server import ByteBudget, StreamServer, peer_name
from openmos.pool.v1_session import PEER_LOG_BURST
from openmos.stratum.v2.codec import Sv2CodecError
from openmos.stratum.v2.messages import Message, SetupConnection, largest_payload
from openmos.stratum.v2.noise import KeyPair, NoiseError, issue_server_identity
from openmos.stratum.v2.transport import Sv2Connection, Sv2FrameRefused, accept_connection

log = logging.getLogger(__name__)

MAX_BAD_MESSAGES = 10
SETUP_MAX_PAYLOAD = largest_payload(SetupConnection)  # 1,291 bytes: all a peer may send before it is set up


@dataclass(eq=False)
class ServedConnection:
    conn: Sv2Connection
    setup: SetupConnection | None = None
    bad: int = 0


S = TypeVar("S", bound=ServedConnection)


class Sv2Listener(Generic[S]):
    """``await start()``; ``await stop()``. Subclasses say how a connection starts, waits and is answered."""

    name: ClassVar[str]  # in log lines
    max_payload: ClassVar[int]  # the largest payload a set-up peer may send (see _max_payload)
    max_connections: ClassVar[int] = 1_000
    budget_bytes: ClassVar[int] = 64 << 20  # large frames (transport.LARGE_PAYLOAD) read at once, all connections

    def __init__(self, authority_secret: bytes, host: str, port: int, setup_timeout: float, *,
                 cert_validity_s: int = 86_400, max_connections: int | None = None) -> None:
        self.authority = KeyPair.from_secret(authority_secret)
        self.static, self.certificate = issue_server_identity(authority_secret, cert_validity_s)
        self.host, self.port, self.setup_timeout = host, port, setup_timeout
        self.handshake_failures = 0
        self.protocol_errors = 0
        self.budget = ByteBudget(self.budget_bytes)
        # Lines about connections and what peers send, in the server's own logger: no flood from a peer.
        self.peer_log = LogLimiter(logging.getLogger(type(self).__module__), burst=PEER_LOG_BURST)
        self._listener = StreamServer(self._handle, max_connections=max_connections or self.max_connections)

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

    def _max_payload(self, state: S) -> int:
        """The largest payload the peer may send next."""
        return SETUP_MAX_PAYLOAD if state.setup is None else self.max_payload

    def _unexpected(self, state: S, msg: Message) -> bool:
        """A message this port does not take (now): counted, logged, ignored; what ``_dispatch`` returns."""
        self.protocol_errors += 1
        state.bad += 1
        self.peer_log.log(logging.INFO, "unexpected", "%s: unexpected %s ignored", self.name, type(msg).__name__)
        return state.bad < MAX_BAD_MESSAGES

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_name(writer)
        try:
            conn = await accept_connection(reader, writer, self.static, self.certificate,
                                           timeout=self.setup_timeout, max_payload=SETUP_MAX_PAYLOAD,
                                           budget=self.budget)
        except (NoiseError, TimeoutError, asyncio.IncompleteReadError, OSError) as exc:
            self.handshake_failures += 1
            self.peer_log.log(logging.INFO, "handshake-failed", "%s: handshake with %s failed: %s", self.name, peer,
                              exc or type(exc).__name__)
            return
        state = self._opened(conn)
        self.peer_log.log(logging.INFO, "connected", "%s: %s connected (encrypted)", self.name, peer)
        try:
            await self._serve(state, peer)
        finally:
            self._closed(state)

    async def _serve(self, state: S, peer: str) -> None:
        conn = state.conn
        loop = asyncio.get_running_loop()
        setup_by = loop.time() + self.setup_timeout
        try:
            while True:
                conn.max_payload = self._max_payload(state)
                timeout = self._timeout(state)
                if state.setup is None:  # a deadline, not a silence: ignored frames do not extend it
                    timeout = max(0.0, min(timeout if timeout is not None else self.setup_timeout,
                                           setup_by - loop.time()))
                try:
                    msg = await asyncio.wait_for(conn.recv(), timeout)
                except Sv2CodecError as exc:
                    self.protocol_errors += 1
                    state.bad += 1
                    self.peer_log.log(logging.WARNING, "malformed", "%s: malformed message from %s: %s", self.name,
                                      peer, exc)
                    if state.bad >= MAX_BAD_MESSAGES or state.setup is None:
                        return
                    continue
                go_on = msg is None or self._dispatch(state, msg)
                await conn.writer.drain()
                if not go_on:
                    return
        except Sv2FrameRefused as exc:  # before NoiseError, which it is
            self.protocol_errors += 1
            self.peer_log.log(logging.WARNING, "refused-frame", "%s: connection from %s closed: %s", self.name, peer,
                              exc)
        except NoiseError as exc:
            self.protocol_errors += 1
            self.peer_log.log(logging.WARNING, "noise", "%s: %s: %s; closing", self.name, peer, exc)
        except TimeoutError:
            if state.setup is None:
                self.peer_log.log(logging.INFO, "no-setup", "%s: %s sent no SetupConnection within %g s, closing",
                                  self.name, peer, self.setup_timeout)
            else:
                self.peer_log.log(logging.INFO, "idle", "%s: %s idle, disconnecting", self.name, peer)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self.peer_log.log(logging.INFO, "disconnected", "%s: %s disconnected", self.name, peer)
