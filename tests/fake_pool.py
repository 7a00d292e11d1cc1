"""A scriptable Stratum server for client tests: it answers the handshake, then does what a test says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

Script = Callable[["FakeConnection"], Awaitable[None]]

NOTIFY = ["j1", "00" * 32, "01", "02", [], "20000000", "207fffff", "5f5e1000", True]


class FakeConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received: list[dict[str, Any]] = []

    async def send(self, obj: dict[str, Any] | bytes) -> None:
        self.writer.write(obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\n")
        await self.writer.drain()

    async def recv(self) -> dict[str, Any]:
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("client closed")
        msg: dict[str, Any] = json.loads(line)
        self.received.append(msg)
        return msg

    async def handshake(self, *, job: list[Any] | None = None) -> None:
        """Answer configure/subscribe/authorize like a normal pool, then send a job."""
        while True:
            msg = await self.recv()
            method = msg.get("method")
            if method == "mining.configure":
                await self.send({"id": msg["id"], "result": {"version-rolling": True,
                                                             "version-rolling.mask": "1fffe000"}, "error": None})
            elif method == "mining.subscribe":
                await self.send({"id": msg["id"], "result": [[["mining.notify", "s1"]], "abcd0001", 4],
                                 "error": None})
            elif method == "mining.authorize":
                await self.send({"id": msg["id"], "result": True, "error": None})
                await self.send({"id": None, "method": "mining.set_difficulty", "params": [0.5]})
                await self.send({"id": None, "method": "mining.notify", "params": job or NOTIFY})
            elif method == "mining.extranonce.subscribe":
                return  # the client's last handshake message


class FakePool:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections: list[FakeConnection] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FakeConnection(reader, writer)
        self.connections.append(conn)
        try:
            await self.script(conn)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for conn in self.connections:
                conn.writer.close()
            await self.server.wait_closed()
