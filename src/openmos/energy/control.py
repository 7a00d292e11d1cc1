"""The site control channel: one persistent JSON-lines connection per device for the curtailment fast path.

Controller -> device: ``{"id": n, "fraction": 0.5}``; device -> controller: ``{"id": n, "ok": true}``.
Persistent connections make "curtail now" one write and one read per device, concurrently for all.
"""

from __future__ import annotations

import asyncio
import itertools
import json


class ControlChannelDevice:
    """A device reached over the control channel (implements ``SiteDevice``)."""

    def __init__(self, device_id: str, max_power_w: float, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.device_id = device_id
        self.max_power_w = max_power_w
        self._reader, self._writer = reader, writer
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, host: str, port: int, device_id: str, max_power_w: float) -> ControlChannelDevice:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(json.dumps({"hello": device_id}).encode() + b"\n")
        await writer.drain()
        return cls(device_id, max_power_w, reader, writer)

    async def set_power_fraction(self, fraction: float) -> bool:
        async with self._lock:  # one outstanding command per device keeps acks in order
            msg_id = next(self._ids)
            self._writer.write(json.dumps({"id": msg_id, "fraction": fraction}).encode() + b"\n")
            await self._writer.drain()
            line = await self._reader.readline()
        if not line:
            raise ConnectionError(f"device {self.device_id} closed the control channel")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            return False
        return bool(reply.get("id") == msg_id and reply.get("ok"))

    def close(self) -> None:
        self._writer.close()
