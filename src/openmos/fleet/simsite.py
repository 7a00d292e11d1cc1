"""A simulated site in fleet mode: one vectorised ``FleetSim`` steps every miner; each miner is exposed as a
device worker (modelled figures, labelled so)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import numpy as np

from openmos import __version__
from openmos.control import Capabilities, ControlSurface, DeviceData, DeviceInfo, PoolInfo, SetTarget
from openmos.fleet.simdevice import target_watts
from openmos.fleet.workers.edge import BusEdge
from openmos.hw.sim import FleetSim, get_model


class FleetSimSite:
    def __init__(self, miners: int, model: str = "s21", seed: int = 0, per_container: int = 100,
                 site: str = "sim-site") -> None:
        self.model = get_model(model)
        self.fleet = FleetSim(self.model, miners=miners, seed=seed, sample_counters=False)
        self.fleet.settle(600)
        self.site = site
        self.per_container = per_container
        self.paused = np.zeros(miners, dtype=bool)
        self.firmware = [f"openmos {__version__}"] * miners
        self._refresh()
        self._task: asyncio.Task[None] | None = None
        self.workers = [SimMinerWorker(self, i) for i in range(miners)]

    def _refresh(self) -> None:
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
