"""A simulated site: one vectorised ``FleetSim`` steps every miner; each miner is a control-surface worker
(``SimMinerWorker``) or, for real agents, ``SlotHardware``; ``SiteMeter`` meters the site over Modbus TCP.
Modelled figures, labelled so."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from openmos import __version__
from openmos.base.net import free_local_port
from openmos.base.tasks import cancel_and_wait
from openmos.control import Capabilities, ControlSurface, DeviceData, DeviceInfo, PoolInfo, SetTarget
from openmos.fleet.workers.edge import BusEdge
from openmos.hw.interface import (
    BoardTelemetry,
    ChipTelemetry,
    FanTelemetry,
    HardwareLimits,
    HardwareTelemetry,
    MiningHardware,
    NonceSink,
    WorkProvider,
)
from openmos.hw.sim import FleetSim, get_model
from openmos.hw.sim.backend import limits_for
from openmos.testbed.device import target_watts


class FleetSimSite:
    def __init__(self, miners: int, model: str = "s21", seed: int = 0, per_container: int = 100,
                 site: str = "sim-site", counters: bool = False) -> None:
        self.model = get_model(model)
        # Per-chip nonce/error counters cost a Poisson draw per chip and step: only for tuners (``SlotHardware``).
        self.fleet = FleetSim(self.model, miners=miners, seed=seed, sample_counters=counters)
        self.fleet.settle(600)
        self.site = site
        self.limits = limits_for(self.model)  # what firmware knows of the model (PLL grid included): once
        self.per_container = per_container
        self.paused = np.zeros(miners, dtype=bool)
        self.firmware = [f"openmos {__version__}"] * miners
        self.refreshes = 0  # times the site's readings (watts, hashrate) were taken from the model
        self._refresh()
        self._task: asyncio.Task[None] | None = None
        self.workers = [SimMinerWorker(self, i) for i in range(miners)]

    def _refresh(self) -> None:
        self.refreshes += 1
        self.ths = self.fleet.valid_hashrate_ths()
        self.watts = self.fleet.true_wall_power()
        self.hottest = self.fleet.t_j.max(axis=(1, 2))

    async def start(self, step_s: float = 2.0) -> None:
        async def loop() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(step_s)
                now = time.monotonic()
                await asyncio.to_thread(self.fleet.step, now - last)
                last = now
                self._refresh()

        self._task = asyncio.create_task(loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def set_fraction(self, miner: int, fraction: float) -> None:
        self.fleet.freq[miner] = self.model.stock_freq_mhz * max(0.0, min(fraction, 1.0))
        self.fleet.board_enabled[miner] = fraction > 0


class SimMinerWorker(ControlSurface, BusEdge):
    """One miner of a ``FleetSimSite`` on the control surface (modelled)."""

    fleet_actions = ("install",)

    def __init__(self, site: FleetSimSite, index: int) -> None:
        super().__init__(f"sim-{index:05d}")
        self.target_w = site.model.nameplate_w
        self.site = site
        self.index = index
        c = index // site.per_container
        self.tags = {"container": f"c{c + 1:02d}", "rack": f"r{(index % site.per_container) // 20 + 1}",
                     "slot": str(index % 20 + 1)}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(curtail=True, curtail_watts=True, target=True, locate=True, reboot=True)

    def full_power_w(self) -> float:
        return self.target_w

    def info(self) -> DeviceInfo:
        m = self.site.model
        return DeviceInfo(self.device_id, m.key, self.site.firmware[self.index], name=f"{m.name} (simulated)",
                          serial=f"SIM{self.index:08d}", boards=m.boards, chips=m.boards * m.chips_per_board,
                          tags=self.tags)

    def get_data(self) -> DeviceData:
        s, i = self.site, self.index
        return DeviceData(self.device_id, self.state, float(s.ths[i]), float(s.watts[i]),
                          hottest_c=float(s.hottest[i]), curtail_fraction=self.fraction,
                          full_power_w=self.target_w, firmware=s.firmware[i], modelled=True,
                          healthy=not (self.held or self.sleeping), locate=self.locating,
                          pools=(PoolInfo("stratum+tcp://pool.example:3333", f"site.{self.device_id}", True),))

    async def fleet_action(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        s, i = self.site, self.index
        previous, s.firmware[i] = s.firmware[i], str(args.get("version", ""))[:64]
        return {"previous": previous}

    async def _stop(self, hold: bool) -> None:
        self.site.paused[self.index] = True
        self.site.set_fraction(self.index, 0.0)

    async def _run(self, fraction: float) -> None:
        self.site.paused[self.index] = False
        self.site.set_fraction(self.index, fraction * self.target_w / self.site.model.nameplate_w)

    async def _set_target(self, command: SetTarget) -> str:
        self.target_w = target_watts(command, self.site.model)
        if not (self.held or self.sleeping):
            await self._run(self.fraction)
        return f"target {self.target_w:.0f} W (modelled)"

    async def _reboot(self) -> str:
        return "rebooted (modelled)"


class SiteMeter:
    """A Modbus TCP power meter (pymodbus server) on a modelled site power, like the site feed's meter.

    Registers 0-1: total active power, float32 in big-endian words (the usual layout). The reading refreshes
    every ``period_s`` with 0.3 % noise (modelled).
    """

    def __init__(self, read_w: Callable[[], float], period_s: float = 1.0, seed: int = 0) -> None:
        self.read_w = read_w
        self.period_s = period_s
        self._rng = np.random.default_rng(seed)
        self._reading: list[int] = [0, 0]
        self._device = SimDevice(id=1, simdata=[SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                                 action=self._on_read)
        self._server: ModbusTcpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self.port = port = port or free_local_port()
        self._publish()
        self._server = ModbusTcpServer(self._device, address=("127.0.0.1", port))
        self._tasks = [asyncio.create_task(self._server.serve_forever()), asyncio.create_task(self._refresh())]
        for _ in range(250):
            await asyncio.sleep(0.02)
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return

    async def stop(self) -> None:
        """The meter fails (stops answering); ``start(meter.port)`` brings it back."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []

    def _publish(self) -> None:
        reading = self.read_w() * (1 + 0.003 * self._rng.standard_normal())
        self._reading = list(ModbusClientMixin.convert_to_registers(reading, ModbusClientMixin.DATATYPE.FLOAT32))

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            self._publish()

    async def _on_read(self, function_code: int, start_address: int, address: int, count: int,
                       registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        for offset, value in enumerate(self._reading):
            if 0 <= offset - start_address < len(registers):
                registers[offset - start_address] = value
        return None


class SlotHardware(MiningHardware):
    """Miner ``index`` of a ``FleetSimSite`` as ``MiningHardware``: real agents (``AgentControl``, tuner,
    safety monitor) drive its clocks, voltages, fans and boards; the site's physics answers (modelled).

    It produces no nonces (hashrate is the model's): it is for control paths, not for shares.
    """

    def __init__(self, site: FleetSimSite, index: int) -> None:
        self.site, self.index = site, index
        self.model = f"{site.model.name} (simulated)"
        self._changes = 0  # control changes made through this miner
        self._read: tuple[tuple[float, int, int], HardwareTelemetry] | None = None  # last snapshot and when

    async def start(self, provider: WorkProvider, sink: NonceSink) -> None:
        return None

    async def stop(self) -> None:
        return None

    def limits(self) -> HardwareLimits:
        return self.site.limits

    def hash_count(self) -> float:
        return 0.0  # no hash counter (its chips report no hashes): the same as a snapshot's

    def telemetry(self) -> HardwareTelemetry:
        """Clocks, counters (with ``FleetSimSite(counters=True)``), sensors, fans and power (modelled).

        Readings are those of the last physics step: read again before the next step and with no control change
        in between, the same snapshot is returned (its sensors sampled once per step, not once per reader)."""
        at = (self.site.fleet.time, self.site.refreshes, self._changes)
        if self._read is not None and self._read[0] == at:
            return self._read[1]
        tel = self._snapshot()
        self._read = (at, tel)
        return tel

    def _snapshot(self) -> HardwareTelemetry:
        f, i, m = self.site.fleet, self.index, self.site.model
        pcb, chip_t = f.read_board_temps(i)
        freq, nonces, errors = f.freq[i].tolist(), f.nonces[i].tolist(), f.errors[i].tolist()
        ticket = f.ticket_difficulty
        boards = [BoardTelemetry(b, [ChipTelemetry(c, freq[b][c], nonces[b][c], errors[b][c], 0.0, freq[b][c] > 0,
                                                   ticket) for c in range(m.chips_per_board)],
                                 pcb[b].tolist(), chip_t[b].tolist(), float(f.v_board[i, b]),
                                 bool(f.board_enabled[i, b])) for b in range(m.boards)]
        fans = [FanTelemetry(k, rpm, float(f.duty[i]) * 100) for k, rpm in enumerate(f.read_fan_rpm(i))]
        return HardwareTelemetry(self.model, boards, fans, float(self.site.watts[i]), m.nominal_ths, modelled=True)

    async def set_chip_frequency(self, board: int, chip: int, mhz: float) -> None:
        self._changes += 1
        self.site.fleet.set_frequency(self.index, board, chip, mhz)

    async def set_chip_frequencies(self, board: int, mhz: Sequence[float]) -> None:
        self._changes += 1
        self.site.fleet.set_frequency(self.index, board, slice(None), np.asarray(mhz, dtype=np.float64))

    async def set_board_frequency(self, board: int, mhz: float) -> None:
        self._changes += 1
        self.site.fleet.set_frequency(self.index, board, slice(None), mhz)

    async def set_board_voltage(self, board: int, volts: float) -> None:
        self._changes += 1
        self.site.fleet.set_board_voltage(self.index, board, volts)

    async def set_fan_duty(self, duty_pct: float) -> None:
        self._changes += 1
        self.site.fleet.set_fan_duty(self.index, duty_pct / 100.0)

    async def set_board_enabled(self, board: int, enabled: bool) -> None:
        self._changes += 1
        self.site.fleet.board_enabled[self.index, board] = enabled
