"""A raw line-level Stratum peer for tests: sends exactly what a test says, reads what comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.notifications: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, port: int) -> RawPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def call(self, msg_id: int, method: str, params: list[Any]) -> dict[str, Any]:
        await self.send_raw(json.dumps({"id": msg_id, "method": method, "params": params}).encode() + b"\n")
        return await self.response(msg_id)

    async def response(self, msg_id: int | None) -> dict[str, Any]:
        while True:
            msg = await self.next_message()
            if "method" in msg and msg.get("id") is None:
                self.notifications.append(msg)
                continue
            if msg.get("id") == msg_id:
                return msg

    async def next_message(self, timeout: float = 5.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise ConnectionError("peer closed")
        result: dict[str, Any] = json.loads(line)
        return result

    async def notification(self, method: str, timeout: float = 5.0) -> dict[str, Any]:
        for i, msg in enumerate(self.notifications):
            if msg["method"] == method:
                return self.notifications.pop(i)
        while True:
            msg = await self.next_message(timeout)
            if msg.get("method") == method:
                return msg
            if "method" in msg:
                self.notifications.append(msg)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
