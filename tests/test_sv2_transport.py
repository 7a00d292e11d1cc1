"""Encrypted SV2 connections on loopback: messages flow both ways; a man in the middle flipping one byte,
a wrong authority key and an oversized frame each end the session with a clear error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmos.stratum.v2.codec import Sv2CodecError
from openmos.stratum.v2.messages import NewExtendedMiningJob, SetupConnection, SetupConnectionSuccess
from openmos.stratum.v2.noise import CertificateError, KeyPair, NoiseError, issue_server_identity
from openmos.stratum.v2.transport import Sv2Connection, Sv2FrameRefused, accept_connection, open_connection

SETUP = SetupConnection(0, 2, 2, 0, "127.0.0.1", 0, "OpenMOS", "test", "1", "")


class Server:
    def __init__(self, authority: KeyPair, max_payload: int = 1 << 20) -> None:
        self.static, self.cert = issue_server_identity(authority.secret, 3600)
        self.received: asyncio.Queue[object] = asyncio.Queue()
        self.max_payload = max_payload
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            conn = await accept_connection(reader, writer, self.static, self.cert, max_payload=self.max_payload)
            while True:
                msg = await conn.recv()
                await self.received.put(msg)
                await conn.send(SetupConnectionSuccess(2, 0))
        except (NoiseError, Sv2CodecError, asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.received.put(exc)
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def authority() -> AsyncIterator[KeyPair]:
    yield KeyPair.generate()


async def test_messages_flow_and_large_frames_are_chunked(authority: KeyPair) -> None:
    server = Server(authority)
    port = await server.start()
    conn = await open_connection("127.0.0.1", port, authority.xonly)
    await conn.send(SETUP)
    assert await asyncio.wait_for(server.received.get(), 10) == SETUP
    assert await asyncio.wait_for(conn.recv(), 10) == SetupConnectionSuccess(2, 0)
    big = NewExtendedMiningJob(1, 2, None, 0x20000000, True, tuple(bytes([i]) * 32 for i in range(200)),
                               b"\x01" * 65535, b"\x02" * 65535)
    await conn.send(big)  # > 65,519 bytes: several Noise blocks
    assert await asyncio.wait_for(server.received.get(), 10) == big
    await conn.close()
    await server.stop()


async def test_wrong_authority_key_refused(authority: KeyPair) -> None:
    server = Server(authority)
    port = await server.start()
    with pytest.raises(CertificateError):
        await open_connection("127.0.0.1", port, KeyPair.generate().xonly)
    await server.stop()


async def test_oversized_frame_is_refused_before_it_is_buffered(authority: KeyPair) -> None:
    server = Server(authority, max_payload=1000)
    port = await server.start()
    conn = await open_connection("127.0.0.1", port, authority.xonly)
    conn.max_payload = 1 << 20
    await conn.send(NewExtendedMiningJob(1, 2, None, 1, True, (), b"\x01" * 5000, b""))
    err = await asyncio.wait_for(server.received.get(), 10)
    # Refused from its header, and the stream ends (its payload would follow): a NoiseError to every reader.
    assert isinstance(err, Sv2FrameRefused) and isinstance(err, NoiseError) and "limit" in str(err)
    await conn.close()
    await server.stop()


async def mitm(upstream_port: int, tamper: Callable[[int, bytes], bytes]) -> asyncio.Server:
    """Relays bytes both ways; ``tamper(offset, chunk)`` may alter client->server bytes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, alter: bool) -> None:
            offset = 0
            try:
                while data := await src.read(65536):
                    dst.write(tamper(offset, data) if alter else data)
                    offset += len(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_w, True), pipe(up_r, writer, False))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_man_in_the_middle_flipping_one_byte_is_detected(authority: KeyPair) -> None:
    server = Server(authority)
    port = await server.start()
    target = 64 + 22 + 10  # a byte inside the first encrypted frame after the 64-byte handshake opening

    def flip(offset: int, data: bytes) -> bytes:
        if offset <= target < offset + len(data):
            data = bytearray(data)
            data[target - offset] ^= 0x01
            return bytes(data)
        return data

    relay = await mitm(port, flip)
    relay_port = relay.sockets[0].getsockname()[1]
    conn: Sv2Connection = await open_connection("127.0.0.1", relay_port, authority.xonly)
    await conn.send(SETUP)
    err = await asyncio.wait_for(server.received.get(), 10)
    assert isinstance(err, NoiseError) and "altered" in str(err)
    await conn.close()
    relay.close()
    await server.stop()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 2**24 - 1))
def test_fuzz_encrypted_stream_fails_cleanly(garbage: bytes, claimed: int) -> None:
    """Random ciphertext, and validly encrypted headers claiming any length followed by garbage: the reader
    raises NoiseError, Sv2CodecError or IncompleteReadError and nothing else."""
    from openmos.stratum.v2.framing import encode_header
    from openmos.stratum.v2.noise import Initiator, Responder

    authority = KeyPair.generate()
    static, cert = issue_server_identity(authority.secret, 3600)
    initiator = Initiator(authority.xonly)
    reply, server = Responder(static, cert).act2(initiator.act1())
    client = initiator.act2(reply)

    async def run(data: bytes) -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        conn = Sv2Connection(reader, None, server, max_payload=1 << 16)  # type: ignore[arg-type]
        with contextlib.suppress(NoiseError, Sv2CodecError, asyncio.IncompleteReadError):
            while True:
                await conn.recv()

    asyncio.run(run(garbage))
    asyncio.run(run(client.send.encrypt(b"", encode_header(0, 0x1A, claimed)) + garbage))
