"""Emulated I2C parts with plausible registers and physics (modelled): EMC2101 fan/temperature, TPS546 regulator.

Die temperature follows power and airflow with a first-order lag: T -> ambient + P x R(rpm), R falling with
fan speed. Power is a dynamic-power model of the chips (k x f x V^2), not a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class I2cNack(Exception):
    """No device at that address, or a command the device does not have."""


def lin11(value: float) -> int:
    exponent = -10
    while exponent < 15 and abs(value) / 2.0 ** exponent >= 1023:
        exponent += 1
    return ((exponent & 0x1F) << 11) | (round(value / 2.0 ** exponent) & 0x7FF)


@dataclass
class Thermal:
    ambient_c: float = 25.0
    die_c: float = 25.0
    tau_s: float = 8.0
    max_rpm: int = 6000

    def step(self, power_w: float, rpm: int, dt: float) -> None:
        r_th = 0.9 + 6.0 / (1.0 + rpm / 1000.0)  # K/W: a bare heatsink without airflow is ~7 K/W
        steady = self.ambient_c + power_w * r_th
        self.die_c += (steady - self.die_c) * (1 - math.exp(-dt / self.tau_s))


@dataclass
class Emc2101:
    thermal: Thermal
    regs: dict[int, int] = field(default_factory=lambda: {0x03: 0x00, 0x4C: 0x3F, 0xFD: 0x16, 0xFE: 0x5D})
    stuck_fan: bool = False
    pointer: int = 0

    @property
    def duty_pct(self) -> float:
        return (self.regs.get(0x4C, 0) & 0x3F) * 100 / 63

    @property
    def rpm(self) -> int:
        if self.stuck_fan:
            return 0
        return round(self.thermal.max_rpm * self.duty_pct / 100)

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.pointer = data[0]
        if len(data) > 1:
            self.regs[data[0]] = data[1]

    def read(self, count: int) -> bytes:
        out = bytes(self._reg(self.pointer + i) for i in range(count))
        return out

    def _reg(self, register: int) -> int:
        t = self.thermal
        if register == 0x00:
            return round(t.ambient_c + (t.die_c - t.ambient_c) * 0.3) & 0xFF
        if register == 0x01:
            return math.floor(t.die_c) & 0xFF
        if register == 0x10:
            return (int((t.die_c - math.floor(t.die_c)) * 8) & 7) << 5
        if register in (0x46, 0x47):
            rpm = self.rpm
            count = 0xFFFF if rpm == 0 or not self.regs.get(0x03, 0) & 0x04 else 5_400_000 // rpm
            return count & 0xFF if register == 0x46 else count >> 8
        return self.regs.get(register, 0)


@dataclass
class Tps546:
    vout_v: float = 0.0  # commanded
    on: bool = False
    fault_bits: int = 0
    iout_a: float = 0.0
    temperature_c: float = 30.0
    pointer: int = 0
    exponent: int = -9  # VOUT_MODE 0x17

    @property
    def output_v(self) -> float:
        return self.vout_v if self.on else 0.0

    def write(self, data: bytes) -> None:
        if not data:
            return
        cmd = data[0]
        self.pointer = cmd
        if cmd == 0x01 and len(data) >= 2:
            self.on = bool(data[1] & 0x80)
        elif cmd == 0x03:
            self.fault_bits = 0 if not self.sticky else self.fault_bits
        elif cmd == 0x21 and len(data) >= 3:
            self.vout_v = int.from_bytes(data[1:3], "little") * 2.0 ** self.exponent
        elif cmd not in (0x20, 0x79, 0x88, 0x8B, 0x8C, 0x8D, 0x99, 0xAD) and len(data) == 1:
            raise I2cNack(f"TPS546: command {cmd:#04x} not emulated")

    sticky: bool = False
    fault_reports: int = 0  # STATUS_WORD reads that reported a fault while the output was on

    def read(self, count: int) -> bytes:
        cmd = self.pointer
        status = self.fault_bits | (0 if self.on else 0x0040)
        if cmd == 0x79 and self.fault_bits and self.on:
            self.fault_reports += 1
        words = {
            0x01: 0x80 if self.on else 0x00,
            0x20: self.exponent & 0x1F,
            0x79: status,
            0x88: lin11(5.0),
            0x8B: round(self.output_v / 2.0 ** self.exponent),
            0x8C: lin11(self.iout_a if self.on else 0.0),
            0x8D: lin11(self.temperature_c),
        }
        if cmd not in words:
            raise I2cNack(f"TPS546: read of command {cmd:#04x} not emulated")
        return words[cmd].to_bytes(2, "little")[:count].ljust(count, b"\x00")
