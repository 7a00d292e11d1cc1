"""Board I2C parts: the EMC2101 fan controller / temperature sensor and the TPS546 core regulator (PMBus).

Both sit on an ``I2cBus`` (the bitaxe-raw control port, or smbus2 on a Linux host). Register facts from the
public datasheets: EMC2101 internal temperature 0x00, external diode 0x01 (+ 0x10 fraction), config 0x03
(bit 2 enables the tach input), tach 0x46/0x47 (RPM = 5,400,000 / count), fan setting 0x4C (0..63), product
id 0xFD, manufacturer 0xFE (0x5D). TPS546 (PMBus): OPERATION 0x01 (0x80 on, 0x00 off), CLEAR_FAULTS 0x03,
VOUT_MODE 0x20, VOUT_COMMAND 0x21, STATUS_WORD 0x79, READ_VIN 0x88, READ_VOUT 0x8B, READ_IOUT 0x8C,
READ_TEMPERATURE_1 0x8D; words little-endian, LINEAR11 and ULINEAR16 (exponent from VOUT_MODE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class I2cBus(Protocol):
    async def i2c_write(self, address: int, data: bytes) -> None: ...

    async def i2c_write_read(self, address: int, data: bytes, count: int) -> bytes: ...


class PartError(RuntimeError):
    """An I2C part is missing or answered with impossible values."""


EMC2101_ADDRESS = 0x4C
EMC2101_MANUFACTURER = 0x5D
EMC2101_TACH_CONSTANT = 5_400_000


class Emc2101:
    def __init__(self, bus: I2cBus, address: int = EMC2101_ADDRESS) -> None:
        self.bus = bus
        self.address = address

    async def _read(self, register: int) -> int:
        return (await self.bus.i2c_write_read(self.address, bytes((register,)), 1))[0]

    async def _write(self, register: int, value: int) -> None:
        await self.bus.i2c_write(self.address, bytes((register, value & 0xFF)))

    async def init(self) -> None:
        maker = await self._read(0xFE)
        if maker != EMC2101_MANUFACTURER:
            raise PartError(f"EMC2101 at {self.address:#04x}: manufacturer id {maker:#04x}, expected 0x5d")
        config = await self._read(0x03)
        await self._write(0x03, config | 0x04)  # tach input on

    async def internal_c(self) -> float:
        raw = await self._read(0x00)
        return float(raw - 256 if raw & 0x80 else raw)

    async def external_c(self) -> float:
        """The external diode (on a Bitaxe: the ASIC's die). Raises PartError on a diode fault reading."""
        high = await self._read(0x01)
        low = await self._read(0x10)
        value = (high - 256 if high & 0x80 else high) + (low >> 5) * 0.125
        if high == 0x7F and low >> 5 == 0x7:  # the part's "diode open / short" code
            raise PartError("EMC2101: external diode fault")
        return value

    async def set_duty(self, duty_pct: float) -> None:
        if not 0.0 <= duty_pct <= 100.0:
            raise ValueError(f"fan duty must be 0..100 %, got {duty_pct!r}")
        await self._write(0x4C, round(duty_pct * 63 / 100))

    async def duty_pct(self) -> float:
        return (await self._read(0x4C) & 0x3F) * 100 / 63

    async def rpm(self) -> int:
        low = await self._read(0x46)
        high = await self._read(0x47)
        count = low | (high << 8)
        if count in (0, 0xFFFF):
            return 0  # stopped (or no tach)
        return EMC2101_TACH_CONSTANT // count


TPS546_ADDRESS = 0x24
OPERATION_ON = 0x80
OPERATION_OFF = 0x00
# STATUS_WORD bits that mean the regulator has a fault (not merely "off" or "busy").
STATUS_FAULT_BITS = {
    0x8000: "output voltage", 0x4000: "output current", 0x2000: "input", 0x0020: "output over-voltage",
    0x0010: "output over-current", 0x0008: "input under-voltage", 0x0004: "over-temperature",
    0x0002: "communication",
}


def linear11(word: int) -> float:
    exponent = word >> 11
    mantissa = word & 0x7FF
    if exponent & 0x10:
        exponent -= 32
    if mantissa & 0x400:
        mantissa -= 2048
    return float(mantissa * 2.0 ** exponent)


def to_linear11(value: float) -> int:
    if not math.isfinite(value):
        raise ValueError(f"cannot encode {value!r} as LINEAR11")
    exponent = -16
    while exponent < 15 and abs(value / 2.0 ** exponent) > 1023:
        exponent += 1
    mantissa = round(value / 2.0 ** exponent)
    return ((exponent & 0x1F) << 11) | (mantissa & 0x7FF)


def fault_names(status_word: int) -> list[str]:
    return [name for bit, name in STATUS_FAULT_BITS.items() if status_word & bit]


@dataclass(frozen=True)
class RegulatorReading:
    vin_v: float
    vout_v: float
    iout_a: float
    temperature_c: float
    status_word: int

    @property
    def faults(self) -> list[str]:
        return fault_names(self.status_word)


class Tps546:
    def __init__(self, bus: I2cBus, address: int = TPS546_ADDRESS, *, vmin: float = 1.0, vmax: float = 1.4) -> None:
        self.bus = bus
        self.address = address
        self.vmin = vmin
        self.vmax = vmax
        self._exponent: int | None = None

    async def _word(self, command: int) -> int:
        return int.from_bytes(await self.bus.i2c_write_read(self.address, bytes((command,)), 2), "little")

    async def _byte(self, command: int) -> int:
        return (await self.bus.i2c_write_read(self.address, bytes((command,)), 1))[0]

    async def exponent(self) -> int:
        if self._exponent is None:
            mode = await self._byte(0x20)
            if mode >> 5:
                raise PartError(f"TPS546 at {self.address:#04x}: VOUT_MODE {mode:#04x} is not ULINEAR16")
            self._exponent = (mode & 0x1F) - 32 if mode & 0x10 else mode & 0x1F
        return self._exponent

    async def init(self) -> None:
        await self.exponent()
        await self.bus.i2c_write(self.address, bytes((0x03,)))  # CLEAR_FAULTS

    async def set_vout(self, volts: float) -> None:
        if not math.isfinite(volts) or not self.vmin <= volts <= self.vmax:
            raise ValueError(f"core voltage must be within {self.vmin}..{self.vmax} V, got {volts!r}")
        word = round(volts / 2.0 ** await self.exponent())
        await self.bus.i2c_write(self.address, bytes((0x21,)) + word.to_bytes(2, "little"))

    async def enable(self, on: bool) -> None:
        await self.bus.i2c_write(self.address, bytes((0x01, OPERATION_ON if on else OPERATION_OFF)))

    async def read(self) -> RegulatorReading:
        exp = await self.exponent()
        vout = await self._word(0x8B) * 2.0 ** exp
        return RegulatorReading(linear11(await self._word(0x88)), vout, linear11(await self._word(0x8C)),
                                linear11(await self._word(0x8D)), await self._word(0x79))
