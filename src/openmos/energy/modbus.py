"""Modbus TCP devices (pymodbus client): site power meters and immersion / hydro container controllers.

Register maps are configuration, because every meter vendor numbers them differently; defaults follow the
common "float32 in two holding registers, big-endian words" layout.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its own retry chatter; we report failures ourselves


class DeviceUnavailable(ConnectionError):
    """The Modbus device did not answer (or answered with an error)."""


@dataclass(frozen=True)
class Register:
    address: int
    kind: str = "holding"  # holding | input
    scale: float = 1.0  # value * scale = SI unit (e.g. 1000 for a meter that reports kW)


class ModbusDevice:
    def __init__(self, host: str, port: int = 502, device_id: int = 1, timeout_s: float = 1.0) -> None:
        self.host, self.port, self.device_id = host, port, device_id
        self._client = AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
        self.deadline_s = 3 * timeout_s  # connect and read together: the client's own timeouts did not bound both

    async def read_float(self, reg: Register) -> float:
        try:
            async with asyncio.timeout(self.deadline_s):
                if not self._client.connected:
                    await self._client.connect()
                if not self._client.connected:
                    raise DeviceUnavailable(f"no Modbus answer from {self.host}:{self.port}")
                read = self._client.read_input_registers if reg.kind == "input" \
                    else self._client.read_holding_registers
                rr = await read(reg.address, count=2, device_id=self.device_id)
        except (TimeoutError, ModbusException, OSError) as exc:
            self._client.close()
            raise DeviceUnavailable(f"Modbus read from {self.host}:{self.port} failed: {exc}") from None
        if rr.isError():
            raise DeviceUnavailable(f"{self.host}:{self.port} register {reg.address}: {rr}")
        value = self._client.convert_from_registers(rr.registers, data_type=self._client.DATATYPE.FLOAT32)
        scaled = float(value) * reg.scale  # type: ignore[arg-type]
        if not math.isfinite(scaled):  # NaN / inf words: a meter fault, never a value (inf capacity lifted limits)
            raise DeviceUnavailable(f"{self.host}:{self.port} register {reg.address} holds no finite number")
        return scaled

    def close(self) -> None:
        self._client.close()


class ModbusPowerMeter(ModbusDevice):
    """Total active power of the site feed."""

    def __init__(self, host: str, port: int = 502, register: Register | None = None, device_id: int = 1) -> None:
        super().__init__(host, port, device_id)
        self.register = register or Register(0)

    async def read_power_w(self) -> float:
        return await self.read_float(self.register)


@dataclass(frozen=True)
class ContainerMap:
    supply_temp_c: Register = Register(0)
    return_temp_c: Register = Register(2)
    flow_m3_h: Register = Register(4)
    cooler_capacity_kw: Register = Register(6, scale=1000.0)  # dry coolers' current heat rejection limit


@dataclass(frozen=True)
class ContainerReading:
    supply_temp_c: float
    return_temp_c: float
    flow_m3_h: float
    capacity_w: float


class ContainerController(ModbusDevice):
    """An immersion or hydro container: pumps, supply/return temperatures and dry-cooler capacity.

    Its limits feed the site optimiser as a power cap: miners cannot dissipate more heat than the coolers
    reject, and less when the supply fluid is already hotter than the miners may run on.
    """

    def __init__(self, host: str, port: int = 502, registers: ContainerMap | None = None,
                 max_supply_c: float = 45.0, derate_per_c: float = 0.08) -> None:
        super().__init__(host, port)
        self.registers = registers or ContainerMap()
        self.max_supply_c = max_supply_c
        self.derate_per_c = derate_per_c

    async def read(self) -> ContainerReading:
        r = self.registers
        return ContainerReading(await self.read_float(r.supply_temp_c), await self.read_float(r.return_temp_c),
                                await self.read_float(r.flow_m3_h), await self.read_float(r.cooler_capacity_kw))

    async def power_limit_w(self) -> float:
        """Heat the container can take now: cooler capacity, derated when the supply runs hot; 0 without flow."""
        reading = await self.read()
        if reading.flow_m3_h <= 0:
            return 0.0  # pumps stopped: nothing may run
        over = max(0.0, reading.supply_temp_c - self.max_supply_c)
        return max(0.0, reading.capacity_w * (1.0 - self.derate_per_c * over))
