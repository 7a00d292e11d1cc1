"""A pty pair the driver opens like a serial port; the emulator serves the master side on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Callable

_SPEEDS = {getattr(termios, f"B{b}"): b for b in (9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000,
                                                   576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000,
                                                   3000000, 3500000, 4000000) if hasattr(termios, f"B{b}")}


class PtyPort:
    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        self.on_data = on_data
        self._loop = asyncio.get_running_loop()
        os.set_blocking(self.master, False)
        self._loop.add_reader(self.master, self._readable)
        self.closed = False

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while the driver side is closed: it may reopen
        if data:
            self.on_data(data)

    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.master, data)

    def line_baud(self) -> int | None:
        """The rate the driver side configured (a pty carries the slave's termios)."""
        try:
            return _SPEEDS.get(termios.tcgetattr(self.master)[5])
        except termios.error:
            return None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.master)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
