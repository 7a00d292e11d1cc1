"""A simulated site in fleet mode: one vectorised ``FleetSim`` steps every miner; each miner is exposed as a
device worker (modelled figures, labelled so)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import numpy as np

from openmos import __version__
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


class SimMinerWorker:
    def __init__(self, site: FleetSimSite, index: int) -> None:
        self.site = site
        self.index = index
        self.device_id = f"sim-{index:05d}"
        c = index // site.per_container
        self.tags = {"container": f"c{c + 1:02d}", "rack": f"r{(index % site.per_container) // 20 + 1}",
                     "slot": str(index % 20 + 1)}

    def inventory(self) -> dict[str, Any]:
        m = self.site.model
        return {"model": m.key, "name": f"{m.name} (simulated)", "firmware": self.site.firmware[self.index],
                "tags": self.tags, "serial": f"SIM{self.index:08d}", "boards": m.boards}

    def status(self) -> dict[str, Any]:
        s, i = self.site, self.index
        return {"hashrate_ths": float(s.ths[i]), "power_w": float(s.watts[i]), "hottest_c": float(s.hottest[i]),
                "paused": bool(s.paused[i]), "firmware": s.firmware[i], "modelled": True,
                "healthy": not s.paused[i], "pools": [{"url": "stratum+tcp://pool.example:3333",
                                                      "user": f"site.{self.device_id}"}]}

    async def act(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        s, i = self.site, self.index
        if action == "pause":
            s.paused[i] = True
            s.set_fraction(i, 0.0)
        elif action == "resume":
            s.paused[i] = False
            s.set_fraction(i, 1.0)
        elif action == "set_power":
            s.set_fraction(i, float(args["watts"]) / s.model.nameplate_w)
        elif action == "curtail":
            s.set_fraction(i, float(args["fraction"]))
        elif action == "install":
            previous, s.firmware[i] = s.firmware[i], str(args["version"])
            return {"previous": previous}
        elif action not in ("locate", "reboot"):
            return {"ok": False, "error": f"{action} not supported by the simulator"}
        return {"action": action}
