"""An asyncio byte stream over a serial port (pyserial), e.g. a UART, a USB CDC port or a pty.

Reads are event driven (``loop.add_reader`` on the port's file descriptor); writes are small frames.
Opening a path that is not there raises ``DeviceNotFound`` naming the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Protocol

import serial

log = logging.getLogger(__name__)

MAX_BUFFERED = 1 << 20  # bytes kept unread before the oldest are dropped (a flooding device)


class DeviceNotFound(FileNotFoundError):
    """The serial device path does not exist or cannot be opened."""


class ByteStream(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def read(self) -> bytes:
        """Some bytes (at least one); raises ConnectionError when the port is gone."""
        ...

    def set_baud(self, baud: int) -> None: ...

    def close(self) -> None: ...


class SerialStream:
    """A pyserial port driven by the running event loop."""

    def __init__(self, path: str, baud: int = 115_200) -> None:
        if not os.path.exists(path):
            raise DeviceNotFound(f"serial device {path} does not exist: check the cable and the path "
                                 f"(ls /dev/ttyACM* /dev/ttyUSB* /dev/serial/by-id/)")
        try:
            self.port = serial.Serial(path, baud, timeout=0, write_timeout=2)
        except (serial.SerialException, OSError) as exc:
            raise DeviceNotFound(f"cannot open serial device {path}: {exc}") from exc
        self.path = path
        self._data = asyncio.Queue[bytes]()
        self._buffered = 0
        self.dropped_bytes = 0
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.port.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = self.port.read(self.port.in_waiting or 1)
        except (serial.SerialException, OSError) as exc:
            log.error("serial device %s failed: %s", self.path, exc)
            self._loop.remove_reader(self.port.fileno())
            self._data.put_nowait(b"")
            return
        if not data:
            return
        self._buffered += len(data)
        self._data.put_nowait(data)
        while self._buffered > MAX_BUFFERED and self._data.qsize() > 1:
            old = self._data.get_nowait()
            self._buffered -= len(old)
            self.dropped_bytes += len(old)

    async def read(self) -> bytes:
        if self._closed:
            raise ConnectionError(f"{self.path} is closed")
        data = await self._data.get()
        if not data:
            raise ConnectionError(f"serial device {self.path} went away")
        self._buffered -= len(data)
        return data

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionError(f"{self.path} is closed")
        try:
            await asyncio.to_thread(self._write_all, data) if len(data) > 4096 else self._write_all(data)
        except (serial.SerialException, OSError) as exc:
            raise ConnectionError(f"writing to {self.path} failed: {exc}") from exc

    def _write_all(self, data: bytes) -> None:
        self.port.write(data)

    def set_baud(self, baud: int) -> None:
        self.port.baudrate = baud

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.port.fileno())
        with contextlib.suppress(Exception):
            self.port.close()
        self._data.put_nowait(b"")
