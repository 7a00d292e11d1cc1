"""A simulated device for fleet tests and demos (modelled figures; it mines nothing)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from openmos.hw.sim.models import get_model


@dataclass
class SimulatedFleetDevice:
    device_id: str
    model: str = "s21"
    tags: dict[str, str] = field(default_factory=dict)
    firmware: str = "openmos 0.1.0"
    pools: list[dict[str, str]] = field(default_factory=lambda: [{"url": "stratum+tcp://pool.example:3333",
                                                                  "user": "site.worker"}])
    bad_firmware: frozenset[str] = frozenset()  # versions that break this unit (for rollout tests)
    fraction: float = 1.0
    paused: bool = False
    locate_until: float = 0.0
    history: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.firmware not in self.bad_firmware

    def inventory(self) -> dict[str, Any]:
        m = get_model(self.model)
        return {"model": self.model, "name": m.name, "firmware": self.firmware, "tags": self.tags,
                "serial": f"SIM{abs(hash(self.device_id)) % 10**8:08d}", "boards": m.boards,
                "chips_per_board": m.chips_per_board}

    def status(self) -> dict[str, Any]:
        m = get_model(self.model)
        running = 0.0 if self.paused or not self.healthy else self.fraction
        return {"hashrate_ths": m.nameplate_ths * running, "power_w": m.nameplate_w * max(running, 0.01),
                "firmware": self.firmware, "pools": self.pools, "paused": self.paused,
                "healthy": self.healthy, "modelled": True, "time": time.time()}

    async def act(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        self.history.append(action)
        if action == "pause":
            self.paused = True
        elif action == "resume":
            self.paused = False
        elif action == "set_power":
            self.fraction = min(1.0, max(0.0, float(args["watts"]) / get_model(self.model).nameplate_w))
        elif action == "curtail":
            self.fraction = min(1.0, max(0.0, float(args["fraction"])))
        elif action == "set_pools":
            self.pools = [{"url": str(p["url"]), "user": str(p["user"])} for p in args["pools"]]
        elif action == "install":
            previous, self.firmware = self.firmware, str(args["version"])
            return {"previous": previous, "firmware": self.firmware}
        elif action == "locate":
            self.locate_until = time.time() + 60
        return {"action": action}
