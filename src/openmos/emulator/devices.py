"""Emulated devices on ptys: a bare serial chain (``mos emulate chain``) and Bitaxe boards (``mos emulate
bitaxe-gamma``) that speak the bitaxe-raw control protocol next to the raw ASIC data port."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from openmos.base.tasks import cancel_and_wait
from openmos.emulator.chip import EmulatedChain
from openmos.emulator.parts import Emc2101, I2cNack, Thermal, Tps546
from openmos.emulator.pty import PtyPort

log = logging.getLogger(__name__)

TICK_S = 0.05


@dataclass(frozen=True)
class BoardModel:
    name: str
    chip: str
    chips: int = 1


BOARDS = {
    "bitaxe-gamma": BoardModel("Bitaxe Gamma", "bm1370"),
    "bitaxe-supra": BoardModel("Bitaxe Supra", "bm1368"),
    "bitaxe-ultra": BoardModel("Bitaxe Ultra", "bm1366"),
}


@dataclass
class LineStats:
    misrate_bytes: int = 0  # bytes lost because host and chips ran different baud rates


class _Ticker:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start_ticking(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"emulator-{type(self).__name__}")

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self.tick(min(now - last, 1.0))
            last = now

    def tick(self, dt: float) -> None:
        raise NotImplementedError

    async def stop_ticking(self) -> None:
        await cancel_and_wait(self._task)


class EmulatedSerialChain(_Ticker):
    """A chain of chips on one UART. Bytes sent at a baud rate the chips are not set to are lost."""

    def __init__(self, chip: str, chips: int, *, hashrate: float = 20_000.0, diff1_shift: int = 20) -> None:
        super().__init__()
        self.chain = EmulatedChain(chip, chips, hashrate=hashrate, diff1_shift=diff1_shift)
        self.line = LineStats()
        self.port: PtyPort | None = None

    async def start(self) -> str:
        self.port = PtyPort(self._on_data)
        self.start_ticking()
        return self.port.path

    def _rates_match(self) -> bool:
        assert self.port is not None
        host = self.port.line_baud()
        return host is None or abs(host - self.chain.baud()) / self.chain.baud() < 0.05

    def _on_data(self, data: bytes) -> None:
        assert self.port is not None
        if not self._rates_match():
            self.line.misrate_bytes += len(data)
            return
        for frame in self.chain.receive(data):
            self.port.write(frame)

    def tick(self, dt: float) -> None:
        if self.port is None:
            return
        out = self.chain.tick(dt)
        if out and self._rates_match():
            self.port.write(b"".join(out))

    async def stop(self) -> None:
        await self.stop_ticking()
        if self.port is not None:
            self.port.close()


@dataclass
class BitaxeEvents:
    reset_asserted_at: list[float] = field(default_factory=list)
    regulator_off_at: list[float] = field(default_factory=list)
    fan_full_at: list[float] = field(default_factory=list)
    control_errors: int = 0
    garbage_bytes: int = 0


class EmulatedBitaxe(_Ticker):
    """One Bitaxe: control port (bitaxe-raw packets: GPIO 0 = ASIC reset, I2C to the EMC2101 at 0x4C and the
    TPS546 at 0x24, ADC, fan) and data port (the chip's UART)."""

    def __init__(self, board: str = "bitaxe-gamma", *, hashrate: float = 20_000.0, diff1_shift: int = 20) -> None:
        super().__init__()
        if board not in BOARDS:
            raise ValueError(f"unknown board {board!r}: one of {', '.join(BOARDS)}")
        self.model = BOARDS[board]
        self.chain = EmulatedChain(self.model.chip, self.model.chips, hashrate=hashrate, diff1_shift=diff1_shift)
        self.thermal = Thermal()
        self.emc = Emc2101(self.thermal)
        self.vr = Tps546()
        self.reset_released = False
        self.events = BitaxeEvents()
        self.control: PtyPort | None = None
        self.data: PtyPort | None = None
        self._cbuf = b""
        self._update_power()

    async def start(self) -> tuple[str, str]:
        self.control = PtyPort(self._on_control)
        self.data = PtyPort(self._on_data)
        self.start_ticking()
        return self.control.path, self.data.path

    # -- faults -------------------------------------------------------------------------------------

    def inject_vr_fault(self, bits: int = 0x4010) -> None:
        """Output over-current (STATUS_WORD IOUT + IOUT_OC): sticky until the fault is cleared here."""
        self.vr.fault_bits |= bits
        self.vr.sticky = True

    def clear_vr_fault(self) -> None:
        self.vr.fault_bits, self.vr.sticky = 0, False

    # -- power --------------------------------------------------------------------------------------

    def _update_power(self) -> None:
        powered = self.vr.on and self.vr.vout_v > 0.8 and self.reset_released
        if self.chain.powered and not powered:
            self.chain.reset()
        self.chain.powered = powered

    def power_w(self) -> float:
        if not self.chain.powered:
            return 0.3 if self.vr.on else 0.0
        v = self.vr.output_v
        return sum(self.chain.model.watts_per_mhz_v2 * c.mhz * v * v for c in self.chain.live()) + 0.5

    # -- data port ----------------------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        assert self.data is not None
        for frame in self.chain.receive(data):
            self.data.write(frame)

    def tick(self, dt: float) -> None:
        power = self.power_w()
        self.vr.iout_a = power / self.vr.output_v if self.vr.output_v > 0 else 0.0
        self.vr.temperature_c = self.thermal.ambient_c + power * 1.5
        self.thermal.step(power, self.emc.rpm, dt)
        out = self.chain.tick(dt)
        if out and self.data is not None:
            self.data.write(b"".join(out))

    # -- control port -------------------------------------------------------------------------------

    def _on_control(self, data: bytes) -> None:
        assert self.control is not None
        self._cbuf += data
        while len(self._cbuf) >= 2:
            length = int.from_bytes(self._cbuf[:2], "little")
            if length < 6 or length > 4096:
                self.events.garbage_bytes += len(self._cbuf)
                self._cbuf = b""
                return
            if len(self._cbuf) < length:
                return
            packet, self._cbuf = self._cbuf[:length], self._cbuf[length:]
            ident, page, cmd, payload = packet[2], packet[4], packet[5], packet[6:]
            try:
                answer = self._handle(page, cmd, payload)
            except I2cNack as exc:
                log.debug("control: %s", exc)
                self.events.control_errors += 1
                answer = b"\xff\x13"
            except (ValueError, IndexError):
                self.events.control_errors += 1
                answer = b"\xff\x11"
            self.control.write((len(answer) + 3).to_bytes(2, "little") + bytes((ident,)) + answer)

    def _handle(self, page: int, cmd: int, payload: bytes) -> bytes:
        now = time.monotonic()
        if page == 0x06:  # GPIO: the command is the pin
            if cmd != 0:
                raise ValueError("only pin 0 (ASIC reset) is wired")
            if payload:
                level = bool(payload[0])
                if not level and self.reset_released:
                    self.events.reset_asserted_at.append(now)
                self.reset_released = level
                self._update_power()
            return bytes((1 if self.reset_released else 0,))
        if page == 0x05:
            if not payload:
                raise ValueError("I2C needs an address")
            parts: dict[int, Emc2101 | Tps546] = {0x4C: self.emc, 0x24: self.vr}
            device = parts.get(payload[0])
            if device is None:
                raise I2cNack(f"no I2C device at {payload[0]:#04x}")
            if cmd == 0x20:
                was_on = self.vr.on
                device.write(payload[1:])
                if device is self.vr and was_on and not self.vr.on:
                    self.events.regulator_off_at.append(now)
                if device is self.emc and self.emc.duty_pct >= 99.9:
                    self.events.fan_full_at.append(now)
                self._update_power()
                return b""
            if cmd == 0x30:
                return device.read(payload[1])
            if cmd == 0x40:
                device.write(payload[1:-1])
                return device.read(payload[-1])
            raise ValueError("unknown I2C command")
        if page == 0x07 and cmd == 0x50:
            return (5000).to_bytes(2, "little")
        if page == 0x09:
            if cmd == 0x10 and payload:
                self.emc.write(bytes((0x4C, round(min(payload[0], 100) * 63 / 100))))
                return b""
            if cmd == 0x20:
                return self.emc.rpm.to_bytes(2, "little")
        raise ValueError("unknown page/command")

    async def stop(self) -> None:
        await self.stop_ticking()
        for port in (self.control, self.data):
            if port is not None:
                port.close()
