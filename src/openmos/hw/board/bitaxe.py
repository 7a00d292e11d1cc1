"""Bitaxe boards (Gamma BM1370, Supra BM1368, Ultra BM1366) through the bitaxe-raw USB firmware.

Two USB serial ports: control (bitaxe-raw packets: GPIO 0 is the active-low ASIC reset, the I2C bus carries
the EMC2101 fan controller whose external diode reads the ASIC die, and the TPS546 core regulator) and data
(the chip's UART). Bring-up: chip held in reset, regulator set to the stock core voltage and switched on,
fan on, reset released, then the chain is enumerated on the data port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from openmos.hw.bm13xx.backend import BoardSensors
from openmos.hw.bm13xx.chain import Chain
from openmos.hw.bm13xx.chip import ChipType
from openmos.hw.board.parts import Emc2101, PartError, Tps546
from openmos.hw.transport.bitaxe_raw import GPIO_ASIC_RESET, BitaxeRawControl, ControlError
from openmos.hw.transport.serial import SerialStream

log = logging.getLogger(__name__)

BITAXE_CHIPS = {"gamma": "BM1370", "supra": "BM1368", "ultra": "BM1366"}


class BitaxeBoard:
    def __init__(self, control_path: str, data_path: str, chip: ChipType, *, voltage: float | None = None,
                 fan_duty_pct: float = 100.0, name: str = "Bitaxe", read_retries: int = 2) -> None:
        self.control_path = control_path
        self.data_path = data_path
        self.chip = chip
        self.voltage = voltage or chip.stock_voltage
        self.fan_duty_pct = fan_duty_pct
        self.name = name
        self.read_retries = read_retries  # control-port requests asked again when unanswered (see bitaxe_raw)
        self._control_stream: SerialStream | None = None
        self._data_stream: SerialStream | None = None
        self.control: BitaxeRawControl | None = None
        self.emc: Emc2101 | None = None
        self.vr: Tps546 | None = None

    async def open(self) -> list[Chain]:
        self._control_stream = SerialStream(self.control_path)
        try:
            self._data_stream = SerialStream(self.data_path)
        except BaseException:
            self._control_stream.close()
            raise
        control = self.control = BitaxeRawControl(self._control_stream, retries=self.read_retries)
        await control.gpio_set(GPIO_ASIC_RESET, False)
        self.emc = Emc2101(control)
        self.vr = Tps546(control, vmin=self.chip.volt_range[0], vmax=self.chip.volt_range[1])
        try:
            await self.emc.init()
            await self.emc.set_duty(self.fan_duty_pct)
            await self.vr.init()
            await self.vr.set_vout(self.voltage)
            await self.vr.enable(True)
        except (ControlError, PartError) as exc:
            await self.close()
            raise RuntimeError(f"{self.name} on {self.control_path}: board parts did not come up: {exc}") from exc
        await asyncio.sleep(0.05)
        await control.gpio_set(GPIO_ASIC_RESET, True)
        await asyncio.sleep(0.1)
        return [Chain(self._data_stream, self.chip, name=f"{self.name} {self.data_path}")]

    async def emergency_off(self, why: str) -> None:
        control = self.control
        if control is None:
            return
        # Each step on its own: a failing one must not skip the others. Sent once each: the board acts on the
        # command whether or not its answer is read in time, and a dead port must not hold the power-off up.
        retries, control.retries = control.retries, 0
        try:
            with contextlib.suppress(Exception):
                await control.gpio_set(GPIO_ASIC_RESET, False)
            if self.vr is not None:
                with contextlib.suppress(Exception):
                    await self.vr.enable(False)
            if self.emc is not None:
                with contextlib.suppress(Exception):
                    await self.emc.set_duty(100.0)
        finally:
            control.retries = retries

    async def set_power(self, on: bool) -> None:
        assert self.control is not None and self.vr is not None
        if not on:
            await self.control.gpio_set(GPIO_ASIC_RESET, False)
            await self.vr.enable(False)
            return
        await self.vr.init()  # clears latched faults
        await self.vr.set_vout(self.voltage)
        await self.vr.enable(True)
        await asyncio.sleep(0.05)
        await self.control.gpio_set(GPIO_ASIC_RESET, True)
        await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self.emergency_off("shutdown")
        for stream in (self._data_stream, self._control_stream):
            if stream is not None:
                stream.close()
        self.control = None

    async def sensors(self) -> BoardSensors:
        assert self.emc is not None and self.vr is not None
        s = BoardSensors()
        reading = await self.vr.read()
        s.vout_v, s.iout_a, s.vin_v = reading.vout_v, reading.iout_a, reading.vin_v
        s.faults = reading.faults
        s.board_temps_c = [await self.emc.internal_c(), reading.temperature_c]
        try:
            s.chip_temps_c = [await self.emc.external_c()]
        except PartError as exc:
            log.warning("%s: %s", self.name, exc)
        s.fan_rpm = await self.emc.rpm()
        s.fan_duty_pct = await self.emc.duty_pct()
        return s

    async def set_voltage(self, volts: float) -> None:
        assert self.vr is not None
        await self.vr.set_vout(volts)
        self.voltage = volts  # kept across a power cycle

    async def set_fan(self, duty_pct: float) -> None:
        assert self.emc is not None
        await self.emc.set_duty(duty_pct)
