"""Client for the bitaxe-raw USB firmware's control port: I2C, GPIO, ADC and fan behind one packet protocol.

Request ``LEN u16 LE (whole packet) | ID | BUS=0 | PAGE | CMD | DATA``; response ``LEN u16 LE (whole packet)
| ID | DATA``, an error response carries ``0xFF, code`` as its data. Pages: 0x05 I2C (0x20 write
``[addr, bytes...]``, 0x30 read ``[addr, n]``, 0x40 write-read ``[addr, bytes..., n]``), 0x06 GPIO (the
command byte is the pin; data ``[level]`` sets, no data reads; pin 0 is the active-low ASIC reset), 0x07 ADC
(0x50 reads VDD in mV), 0x09 fan (0x10 set duty %, 0x20 read tach RPM). One request is outstanding at a time.

A request left unanswered for ``timeout_s`` is sent again (new id, each wait doubled, up to ``retries`` times;
see ``patience``): a loaded host reads the port late, and the late answer to an earlier attempt still counts.
Answers that come after their request was repeated or given up are counted (``late_responses``), not taken for
the answer to another request. Every request here is a read or sets a value, so asking twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from openmos.hw.transport.patience import retry_waits
from openmos.hw.transport.serial import ByteStream

log = logging.getLogger(__name__)

PAGE_I2C = 0x05
PAGE_GPIO = 0x06
PAGE_ADC = 0x07
PAGE_FAN = 0x09
I2C_WRITE = 0x20
I2C_READ = 0x30
I2C_WRITE_READ = 0x40
ADC_VDD = 0x50
FAN_SET = 0x10
FAN_TACH = 0x20
GPIO_ASIC_RESET = 0x00
MAX_RESPONSE = 4 + 256 + 64
ERROR_CODES = {0x10: "timeout", 0x11: "invalid command", 0x12: "denied", 0x13: "fault", 0xFF: "firmware message"}


class ControlError(RuntimeError):
    """The control port answered with an error, garbage, or not at all."""


@dataclass
class ControlStats:
    requests: int = 0
    errors: int = 0
    timeouts: int = 0  # requests given up after every retry
    retries: int = 0  # requests sent again because no answer had come in time
    late_responses: int = 0  # answers to an attempt already repeated or given up (a slow host, not a fault)
    garbage_bytes: int = 0
    stray_responses: int = 0


class BitaxeRawControl:
    def __init__(self, stream: ByteStream, *, timeout_s: float = 1.0, retries: int = 2) -> None:
        self.stream = stream
        self.timeout_s = timeout_s
        self.retries = retries
        self._overdue: set[int] = set()  # ids of attempts repeated or given up: their answer may still come
        self.stats = ControlStats()
        self._lock = asyncio.Lock()
        self._next_id = 0
        self._buf = bytearray()

    async def request(self, page: int, command: int, data: bytes = b"") -> bytes:
        async with self._lock:
            self.stats.requests += 1
            waits = retry_waits(self.timeout_s, self.retries)
            idents: set[int] = set()
            for attempt, wait_s in enumerate(waits):
                if attempt:
                    self.stats.retries += 1
                    self._overdue |= idents
                self._next_id = (self._next_id + 1) & 0xFF
                ident = self._next_id
                idents.add(ident)
                self._overdue.discard(ident)  # ids wrap after 256: this one is asked anew
                packet = bytes((ident, 0, page, command)) + data
                await self.stream.write((len(packet) + 2).to_bytes(2, "little") + packet)
                with contextlib.suppress(TimeoutError):
                    reply = await asyncio.wait_for(self._response(idents), wait_s)
                    if attempt:  # the answers to the other attempts may still come
                        self._overdue |= idents
                    return reply
            self.stats.timeouts += 1
            self._overdue |= idents
            self._buf.clear()
            raise ControlError(f"control port: no answer to page {page:#04x} command {command:#04x} "
                               f"within {sum(waits):g} s ({len(waits)} tries)")

    async def _response(self, idents: set[int]) -> bytes:
        while True:
            while len(self._buf) >= 3:
                length = int.from_bytes(self._buf[:2], "little")
                if not 3 <= length <= MAX_RESPONSE:
                    self.stats.garbage_bytes += len(self._buf)
                    log.warning("control port: bad packet length %d, dropping %d bytes", length, len(self._buf))
                    self._buf.clear()
                    break
                if len(self._buf) < length:
                    break
                packet = bytes(self._buf[:length])
                del self._buf[:length]
                if packet[2] not in idents:
                    if packet[2] in self._overdue:
                        self._overdue.discard(packet[2])  # bounded: at most 256 ids
                        self.stats.late_responses += 1
                    else:
                        self.stats.stray_responses += 1
                    continue
                payload = packet[3:]
                if len(payload) >= 2 and payload[0] == 0xFF:
                    self.stats.errors += 1
                    detail = ERROR_CODES.get(payload[1], f"code {payload[1]:#04x}")
                    message = payload[2:].decode("ascii", "replace")
                    raise ControlError(f"control port error: {detail} {message}".rstrip())
                return payload
            self._buf += await self.stream.read()

    # -- pages --------------------------------------------------------------------------------------

    async def i2c_write(self, address: int, data: bytes) -> None:
        await self.request(PAGE_I2C, I2C_WRITE, bytes((address,)) + data)

    async def i2c_write_read(self, address: int, data: bytes, count: int) -> bytes:
        reply = await self.request(PAGE_I2C, I2C_WRITE_READ, bytes((address,)) + data + bytes((count,)))
        if len(reply) != count:
            raise ControlError(f"I2C {address:#04x}: asked for {count} bytes, got {len(reply)}")
        return reply

    async def gpio_set(self, pin: int, level: bool) -> None:
        await self.request(PAGE_GPIO, pin, bytes((1 if level else 0,)))

    async def gpio_get(self, pin: int) -> bool:
        reply = await self.request(PAGE_GPIO, pin)
        return bool(reply and reply[0])

    async def adc_vdd_mv(self) -> int:
        reply = await self.request(PAGE_ADC, ADC_VDD)
        return int.from_bytes(reply[:2], "little")

    async def fan_set(self, duty_pct: float) -> None:
        await self.request(PAGE_FAN, FAN_SET, bytes((max(0, min(100, round(duty_pct))),)))

    async def fan_rpm(self) -> int:
        return int.from_bytes((await self.request(PAGE_FAN, FAN_TACH))[:2], "little")
