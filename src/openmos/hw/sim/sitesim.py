"""A simulated mining site for energy tests and benchmarks: many devices behind the site control channel,
their modelled power response, and a Modbus TCP power meter (pymodbus server) that reads the total.

Modelled, not measured: device power follows its commanded fraction with a first-order lag (PSU and
frequency ramp, ``tau_s``), and the meter adds 0.3 % noise and refreshes every ``meter_period_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import numpy as np
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from openmos.base.net import free_local_port


class SimulatedSite:
    def __init__(self, max_power_w: np.ndarray, *, tau_s: float = 0.5, meter_period_s: float = 1.0,
                 idle_w: float = 15.0, seed: int = 0) -> None:
        self.max_power_w = np.asarray(max_power_w, dtype=np.float64)
        self.fraction = np.ones(len(self.max_power_w))
        self.power_w = self.max_power_w.copy()
        self.tau_s = tau_s
        self.meter_period_s = meter_period_s
        self.idle_w = idle_w
        self._rng = np.random.default_rng(seed)
        self._reading: list[int] = [0, 0]
        # Registers 0-1: total active power, float32, big-endian words (the usual meter layout).
        self._device = SimDevice(id=1, simdata=[SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                                 action=self._on_read)
        self._control: asyncio.Server | None = None
        self._meter: ModbusTcpServer | None = None
        self._meter_task: asyncio.Task[None] | None = None
        self._physics: asyncio.Task[None] | None = None
        self.control_port = 0
        self.meter_port = 0
        self.commands = 0

    @property
    def true_power_w(self) -> float:
        return float(self.power_w.sum())

    async def start(self, meter_port: int = 0) -> None:
        self._control = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=1 << 16, backlog=4096)
        self.control_port = self._control.sockets[0].getsockname()[1]
        self._physics = asyncio.create_task(self._physics_loop())
        await self.start_meter(meter_port)

    async def start_meter(self, port: int = 0) -> None:
        self.meter_port = port = port or free_local_port()
        self._publish()
        self._meter = ModbusTcpServer(self._device, address=("127.0.0.1", port))
        self._meter_task = asyncio.create_task(self._meter.serve_forever())
        for _ in range(100):
            await asyncio.sleep(0.02)
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return

    async def stop_meter(self) -> None:
        """The meter fails (stops answering)."""
        if self._meter is not None:
            await self._meter.shutdown()  # type: ignore[no-untyped-call]
            self._meter = None
        if self._meter_task is not None:
            self._meter_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._meter_task
            self._meter_task = None

    async def stop(self) -> None:
        await self.stop_meter()
        if self._physics is not None:
            self._physics.cancel()
        if self._control is not None:
            self._control.close()

    def _publish(self) -> None:
        reading = self.true_power_w * (1 + 0.003 * self._rng.standard_normal())
        self._reading = list(ModbusClientMixin.convert_to_registers(reading, ModbusClientMixin.DATATYPE.FLOAT32))

    async def _on_read(self, function_code: int, start_address: int, address: int, count: int,
                       registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """Serve the latest published reading from registers 0-1."""
        for offset, value in enumerate(self._reading):
            if 0 <= offset - start_address < len(registers):
                registers[offset - start_address] = value
        return None

    async def _physics_loop(self) -> None:
        last = time.monotonic()
        next_meter = last
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            target = np.maximum(self.fraction * self.max_power_w, np.where(self.fraction > 0, 0, self.idle_w))
            self.power_w += (target - self.power_w) * (1 - np.exp(-(now - last) / self.tau_s))
            last = now
            if now >= next_meter:
                self._publish()
                next_meter = now + self.meter_period_s

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = json.loads(await reader.readline())
            index = int(str(hello["hello"]).rsplit("-", 1)[-1])
            while line := await reader.readline():
                msg = json.loads(line)
                fraction = float(msg["fraction"])
                ok = 0.0 <= fraction <= 1.0
                if ok:
                    self.fraction[index] = fraction
                    self.commands += 1
                writer.write(json.dumps({"id": msg.get("id"), "ok": ok}).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError, KeyError, IndexError, json.JSONDecodeError):
            pass
        finally:
            writer.close()


async def _serve(devices: int, seed: int) -> None:
    import resource
    import sys

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, devices + 512)), hard))
    rng = np.random.default_rng(seed)
    site = SimulatedSite(rng.choice([3500.0, 3068.0, 3645.0], size=devices), seed=seed)
    await site.start()
    print(json.dumps({"control_port": site.control_port, "meter_port": site.meter_port,
                      "max_power_w": site.max_power_w.tolist()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await site.stop()


def main() -> None:
    """``python -m openmos.hw.sim.sitesim DEVICES [SEED]``: run a simulated site in its own process."""
    import sys

    asyncio.run(_serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))


if __name__ == "__main__":
    main()
