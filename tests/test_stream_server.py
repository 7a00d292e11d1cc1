"""openmos.base.server.StreamServer: the one listener lifecycle every server uses (pool, V2, JDS, TP, RPC, proxy)."""

from __future__ import annotations

import asyncio

from openmos.base.server import StreamServer


async def test_stop_ends_every_connection_even_a_silent_peer() -> None:
    started = asyncio.Event()
    ended: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started.set()
        try:
            await reader.read()  # a peer that never sends anything: only stop() ends this
        finally:
            ended.append("handler")

    server = StreamServer(handle)
    port = await server.start("127.0.0.1", 0)
    assert server.serving and port > 0
    peers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await asyncio.wait_for(started.wait(), 30)
    while server.connections < 3:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(server.stop(), 30)
    assert not server.serving and server.connections == 0 and ended == ["handler"] * 3
    for reader, writer in peers:  # each peer sees its connection closed
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
    await server.stop()  # idempotent


async def test_handler_returning_closes_the_connection_and_limits_are_kept() -> None:
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await release.wait()

    server = StreamServer(handle, max_connections=2)
    port = await server.start("127.0.0.1", 0)
    peers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    for reader, _ in peers:
        assert await asyncio.wait_for(reader.readline(), 30) == b"hello\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # one too many: closed at once
    assert await asyncio.wait_for(reader.read(), 30) == b""
    assert server.refused == 1 and server.connections == 2
    release.set()
    for reader, w in peers:  # the handler returned: the server closed the connection itself
        assert await asyncio.wait_for(reader.read(), 30) == b""
        w.close()
    writer.close()
    assert server.connections == 0
    await server.stop()
