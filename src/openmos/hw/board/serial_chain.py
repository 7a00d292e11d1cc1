"""A BM13xx chain on a Linux host's UART (Raspberry Pi hats, multi-chip USB boards), I2C through smbus2.

A board description file (TOML) says what is on the board::

    name = "piaxe"
    chip = "BM1366"
    port = "/dev/ttyS0"
    chips = 4                     # expected per chain
    domains = [2, 2]              # chips per voltage domain (first chips first)
    i2c_bus = 1                   # optional: /dev/i2c-1
    emc2101 = 0x4c                # optional parts on that bus
    tps546 = 0x24

Without an I2C bus the board has no sensors or voltage control; the chain still mines.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from openmos.base.files import read_toml
from openmos.hw.bm13xx.backend import BoardSensors
from openmos.hw.bm13xx.chain import Chain
from openmos.hw.bm13xx.chip import ChipType
from openmos.hw.board.parts import Emc2101, Tps546
from openmos.hw.interface import UnsupportedControl
from openmos.hw.transport.serial import SerialStream


@dataclass(frozen=True)
class BoardDescription:
    chip: str
    port: str
    chips: int | None = None
    name: str = "serial chain"
    domains: tuple[int, ...] = ()
    i2c_bus: int | None = None
    emc2101: int | None = None
    tps546: int | None = None
    baud: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> BoardDescription:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"board description {path} does not exist")
        raw = read_toml(path)  # ValueError naming the file
        known = {"chip", "port", "chips", "name", "domains", "i2c_bus", "emc2101", "tps546", "baud"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"board description {path}: unknown keys {unknown}")
        if not isinstance(raw.get("chip"), str) or not isinstance(raw.get("port"), str):
            raise ValueError(f"board description {path}: 'chip' and 'port' are required strings")
        domains = raw.get("domains", [])
        if not isinstance(domains, list) or not all(isinstance(d, int) and d > 0 for d in domains):
            raise ValueError(f"board description {path}: 'domains' is a list of positive chip counts")
        chips = raw.get("chips")
        if chips is not None and domains and sum(domains) != chips:
            raise ValueError(f"board description {path}: domains add up to {sum(domains)} chips, not {chips}")
        for key in ("chips", "i2c_bus", "emc2101", "tps546", "baud"):
            if key in raw and (not isinstance(raw[key], int) or raw[key] < 0):
                raise ValueError(f"board description {path}: {key!r} must be a non-negative integer")
        return cls(raw["chip"], raw["port"], chips, str(raw.get("name", "serial chain")), tuple(domains),
                   raw.get("i2c_bus"), raw.get("emc2101"), raw.get("tps546"), raw.get("baud"))


class SmbusI2c:
    """smbus2 behind the async I2C interface the parts use (each transfer in a worker thread)."""

    def __init__(self, bus: int) -> None:
        from smbus2 import SMBus

        self.bus = SMBus(bus)

    async def i2c_write(self, address: int, data: bytes) -> None:
        from smbus2 import i2c_msg

        await asyncio.to_thread(self.bus.i2c_rdwr, i2c_msg.write(address, list(data)))

    async def i2c_write_read(self, address: int, data: bytes, count: int) -> bytes:
        from smbus2 import i2c_msg

        write, read = i2c_msg.write(address, list(data)), i2c_msg.read(address, count)
        await asyncio.to_thread(self.bus.i2c_rdwr, write, read)
        return bytes(read)


class SerialChainBoard:
    def __init__(self, port: str, chip: ChipType, *, description: BoardDescription | None = None) -> None:
        self.port = port
        self.chip = chip
        self.description = description
        self.name = description.name if description else f"{chip.name} chain"
        self._stream: SerialStream | None = None
        self.emc: Emc2101 | None = None
        self.vr: Tps546 | None = None

    async def open(self) -> list[Chain]:
        d = self.description
        if d is not None and d.i2c_bus is not None:
            bus = SmbusI2c(d.i2c_bus)
            if d.emc2101 is not None:
                self.emc = Emc2101(bus, d.emc2101)
                await self.emc.init()
            if d.tps546 is not None:
                self.vr = Tps546(bus, d.tps546, vmin=self.chip.volt_range[0], vmax=self.chip.volt_range[1])
                await self.vr.init()
                await self.vr.set_vout(self.chip.stock_voltage)
                await self.vr.enable(True)
        self._stream = SerialStream(self.port)
        return [Chain(self._stream, self.chip, name=f"{self.name} {self.port}")]

    async def emergency_off(self, why: str) -> None:
        if self.vr is not None:
            await self.vr.enable(False)
        if self.emc is not None:
            await self.emc.set_duty(100.0)

    async def set_power(self, on: bool) -> None:
        if self.vr is None:
            raise UnsupportedControl(f"{self.name}: no regulator in the board description to switch off")
        await self.vr.enable(on)
        await asyncio.sleep(0.1 if on else 0.0)

    async def close(self) -> None:
        try:
            await self.emergency_off("shutdown")
        finally:
            if self._stream is not None:
                self._stream.close()

    async def sensors(self) -> BoardSensors:
        s = BoardSensors()
        if self.vr is not None:
            r = await self.vr.read()
            s.vout_v, s.iout_a, s.vin_v, s.faults = r.vout_v, r.iout_a, r.vin_v, r.faults
            s.board_temps_c.append(r.temperature_c)
        if self.emc is not None:
            s.chip_temps_c = [await self.emc.external_c()]
            s.fan_rpm, s.fan_duty_pct = await self.emc.rpm(), await self.emc.duty_pct()
        return s

    async def set_voltage(self, volts: float) -> None:
        if self.vr is None:
            raise UnsupportedControl(f"{self.name}: no regulator in the board description")
        await self.vr.set_vout(volts)

    async def set_fan(self, duty_pct: float) -> None:
        if self.emc is None:
            raise UnsupportedControl(f"{self.name}: no fan controller in the board description")
        await self.emc.set_duty(duty_pct)
