"""A simulated device for fleet tests and demos (modelled figures; it mines nothing), on the control surface."""

from __future__ import annotations

import time
import zlib
from typing import Any

from openmos.control import (
    Capabilities,
    ControlSurface,
    CurvePoint,
    DeviceData,
    DeviceInfo,
    InvalidCommand,
    PoolInfo,
    SetPools,
    SetTarget,
)
from openmos.fleet.workers.edge import BusEdge
from openmos.hw.sim.models import MinerModel, get_model
from openmos.tuning import PerformanceTarget, TargetKind


def target_watts(command: SetTarget, model: MinerModel) -> float:
    """The modelled wall power a simulated device runs at for a target (never above nameplate)."""
    try:
        target = PerformanceTarget.choose(power_w=command.power_w, hashrate_ths=command.hashrate_ths,
                                          profile=command.profile, nameplate_w=model.nameplate_w)
    except ValueError as exc:
        raise InvalidCommand(str(exc)) from None
    if target.kind is TargetKind.POWER:
        return min(model.nameplate_w, target.value)
    return min(model.nameplate_w, model.nameplate_w * target.value / model.nameplate_ths)


class SimulatedFleetDevice(ControlSurface, BusEdge):
    fleet_actions = ("install",)

    def __init__(self, device_id: str, model: str = "s21", tags: dict[str, str] | None = None,
                 firmware: str = "openmos 0.1.0", pools: list[dict[str, str]] | None = None,
                 bad_firmware: frozenset[str] = frozenset(), curve: tuple[CurvePoint, ...] = ()) -> None:
        super().__init__(device_id)
        self.model = model
        self.tags = tags or {}
        self.firmware = firmware
        self.pools = pools or [{"url": "stratum+tcp://pool.example:3333", "user": "site.worker"}]
        self.bad_firmware = bad_firmware  # versions that break this unit (for rollout tests)
        self.target_w = get_model(model).nameplate_w
        self.history: list[str] = []
        self.curve = curve  # an efficiency curve as a tuner would report it (tests give one)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(curtail=True, curtail_watts=True, target=True, pools=True, locate=True, reboot=True)

    @property
    def healthy(self) -> bool:
        return self.firmware not in self.bad_firmware

    @property
    def paused(self) -> bool:
        return self.held or self.sleeping

    def full_power_w(self) -> float:
        return self.target_w

    def info(self) -> DeviceInfo:
        m = get_model(self.model)
        return DeviceInfo(self.device_id, self.model, self.firmware, name=m.name,
                          serial=f"SIM{zlib.crc32(self.device_id.encode()) % 10**8:08d}", boards=m.boards,
                          chips=m.boards * m.chips_per_board, tags=self.tags, curve=self.curve)

    def get_data(self) -> DeviceData:
        m = get_model(self.model)
        scale = self.target_w / m.nameplate_w
        running = 0.0 if self.paused or not self.healthy else self.fraction * scale
        return DeviceData(self.device_id, self.state, m.nameplate_ths * running, m.nameplate_w * max(running, 0.01),
                          curtail_fraction=self.fraction, full_power_w=self.target_w, firmware=self.firmware,
                          pools=tuple(PoolInfo(p["url"], p["user"], i == 0) for i, p in enumerate(self.pools)),
                          locate=self.locating, modelled=True, healthy=self.healthy, time=time.time())

    async def act(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        self.history.append(action)
        return await super().act(action, args)

    async def fleet_action(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        previous, self.firmware = self.firmware, str(args.get("version", ""))[:64]
        return {"previous": previous, "firmware": self.firmware}

    async def _stop(self, hold: bool) -> None:
        pass

    async def _run(self, fraction: float) -> None:
        pass

    async def _set_target(self, command: SetTarget) -> str:
        self.target_w = target_watts(command, get_model(self.model))
        return f"target {self.target_w:.0f} W (modelled)"

    async def _set_pools(self, command: SetPools) -> str:
        self.pools = [{"url": p.url, "user": p.user} for p in command.pools]
        return f"{len(self.pools)} pool(s)"

    async def _reboot(self) -> str:
        return "rebooted (modelled)"
