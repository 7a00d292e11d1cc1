"""The encrypted SV2 connection over asyncio streams (sv2-spec 4.5 handshake, 4.6 framing).

Handshake messages travel as raw bytes (64 from the client, 234 back). Afterwards every frame is an
encrypted 6-byte header (22 bytes on the wire) followed by the payload in <= 65,519-byte chunks, each
with its own MAC. The header is checked against the size limit *before* the payload is read, so a peer
cannot make us buffer more than ``max_payload`` (a server lowers it to what the peer may send next: see
``largest_payload``). A server's connections can also share a ``ByteBudget``: a payload over
``LARGE_PAYLOAD`` is only read while the bytes of all such payloads being read stay within it, so many
connections each claiming a large frame cannot add up. Any MAC failure ends the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from openmos.base.server import ByteBudget
from openmos.stratum.v2.codec import Sv2CodecError
from openmos.stratum.v2.framing import HEADER_SIZE, MAX_PAYLOAD, Frame, decode_header, frame_of
from openmos.stratum.v2.messages import Message
from openmos.stratum.v2.noise import (
    ACT1_SIZE,
    ACT2_SIZE,
    MAC_SIZE,
    Certificate,
    Initiator,
    KeyPair,
    NoiseError,
    Responder,
    Session,
    ciphertext_length,
    decrypt_payload,
    encrypt_payload,
)
from openmos.stratum.v2.url import Sv2PoolUrl

ENCRYPTED_HEADER_SIZE = HEADER_SIZE + MAC_SIZE  # 22
LARGE_PAYLOAD = 1 << 16  # payloads above this are charged to the connection's ByteBudget while read


class Sv2FrameRefused(NoiseError):
    """A frame refused from its header (its payload would follow, so the stream cannot go on): the connection
    ends. A NoiseError so that every reader already ends the connection on it."""


class Sv2Busy(Sv2FrameRefused):
    """A large frame arrived while the server's budget for large frames was spent."""


class Sv2Connection:
    """One established, encrypted SV2 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: Session,
                 max_payload: int = MAX_PAYLOAD, budget: ByteBudget | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.session = session
        self.max_payload = max_payload  # the largest payload the next frame may have (a server may change it)
        self.budget = budget
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.frames_received = 0

    @property
    def peer(self) -> str:
        info = self.writer.get_extra_info("peername")
        return f"{info[0]}:{info[1]}" if isinstance(info, tuple) else "?"

    def encode(self, msg: Message) -> bytes:
        """Encrypt one message (advances the send nonce: the bytes must then be written, in order)."""
        frame = frame_of(msg)
        if len(frame.payload) > self.max_payload:
            raise Sv2CodecError(f"{type(msg).__name__} of {len(frame.payload)} bytes exceeds the frame limit")
        send = self.session.send
        return send.encrypt(b"", frame.header()) + encrypt_payload(send, frame.payload)

    def write(self, msg: Message) -> None:
        """Queue one message (no await between encryption and write, so frames never interleave)."""
        data = self.encode(msg)
        self.writer.write(data)
        self.bytes_sent += len(data)
        self.frames_sent += 1

    async def send(self, msg: Message) -> None:
        self.write(msg)
        await self.writer.drain()

    async def read_frame(self) -> Frame:
        """The next frame; raises NoiseError (tampering), Sv2CodecError (malformed) or EOF/ConnectionError."""
        recv = self.session.recv
        header = recv.decrypt(b"", await self.reader.readexactly(ENCRYPTED_HEADER_SIZE))
        try:
            ext, msg_type, channel, length = decode_header(header, self.max_payload)
        except Sv2CodecError as exc:  # larger than the peer may send now
            raise Sv2FrameRefused(str(exc)) from None
        ct_len = ciphertext_length(length)
        budget = self.budget if length > LARGE_PAYLOAD else None
        if budget is not None and not budget.take(ct_len):
            raise Sv2Busy(f"a frame of {length} bytes while other connections are sending large frames; "
                          "try again later")
        try:
            payload = decrypt_payload(recv, await self.reader.readexactly(ct_len)) if ct_len else b""
        finally:
            if budget is not None:
                budget.give(ct_len)
        if len(payload) != length:
            raise NoiseError("payload length does not match its header")
        self.bytes_received += ENCRYPTED_HEADER_SIZE + ct_len
        self.frames_received += 1
        return Frame(ext, msg_type, channel, payload)

    async def recv(self) -> Message | None:
        """The next message (None for a message of an unknown extension, which the spec says to ignore)."""
        return (await self.read_frame()).message()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


async def open_connection(host: str, port: int, authority_xonly: bytes, *, timeout: float = 10.0,
                          max_payload: int = MAX_PAYLOAD) -> Sv2Connection:
    """Connect, run the NX handshake as initiator and verify the pool's certificate; raises on failure."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        initiator = Initiator(authority_xonly)
        writer.write(initiator.act1())
        await writer.drain()
        reply = await asyncio.wait_for(reader.readexactly(ACT2_SIZE), timeout)
        session = initiator.act2(reply)
    except BaseException:
        writer.close()
        raise
    return Sv2Connection(reader, writer, session, max_payload)


async def open_session(url: Sv2PoolUrl, set_up: Callable[[Sv2Connection], Awaitable[None]], *,
                       handshake_timeout: float, setup_timeout: float,
                       unavailable: Callable[[str], ConnectionError],
                       on_setup_failed: Callable[[str], Awaitable[None]]) -> Sv2Connection:
    """A client's connection to a pool: connect, handshake (the certificate checked against ``url``'s authority
    key), then ``set_up`` (SetupConnection, open a channel) within ``setup_timeout``. A failure raises
    ``unavailable(message)``; one during set-up first closes the connection and calls ``on_setup_failed(reason)``
    (``set_up`` raises a ``ConnectionError`` when the pool refuses)."""
    try:
        conn = await open_connection(url.host, url.port, url.authority_key, timeout=handshake_timeout)
    except NoiseError as exc:
        raise unavailable(f"{url}: {exc}") from None
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise unavailable(f"cannot connect to {url}: {exc or type(exc).__name__}") from None
    try:
        await asyncio.wait_for(set_up(conn), setup_timeout)
    except (Sv2CodecError, NoiseError, TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        reason = f"setup failed: {exc or type(exc).__name__}"
        await conn.close()
        await on_setup_failed(reason)
        raise unavailable(f"{url}: {reason}") from None
    return conn


async def accept_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, static: KeyPair,
                            certificate: Certificate, *, timeout: float = 10.0,
                            max_payload: int = MAX_PAYLOAD, budget: ByteBudget | None = None) -> Sv2Connection:
    """Run the NX handshake as responder on a freshly accepted stream."""
    opening = await asyncio.wait_for(reader.readexactly(ACT1_SIZE), timeout)
    reply, session = Responder(static, certificate).act2(opening)
    writer.write(reply)
    await writer.drain()
    return Sv2Connection(reader, writer, session, max_payload, budget)
