"""Third-party miners through pyasic: the control surface over any pyasic miner object (stock Antminer,
Whatsminer, Braiins OS, LuxOS, Vnish, ESP-Miner/Bitaxe ...). Commands a vendor does not support raise
``UnsupportedControl``; the fleet edge reports them as refusals."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from typing import Any

from pyasic.config.pools import Pool, PoolConfig, PoolGroup

from openmos.base.tasks import cancel_and_wait
from openmos.control import (
    Capabilities,
    ControlSurface,
    DeviceData,
    DeviceInfo,
    PoolInfo,
    RunState,
    SetPools,
    SetTarget,
    UnsupportedControl,
)
from openmos.fleet.workers.edge import BusEdge

log = logging.getLogger(__name__)


def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


class PyasicWorker(ControlSurface, BusEdge):
    def __init__(self, miner: Any, device_id: str, tags: dict[str, str] | None = None,
                 full_power_w: float | None = None) -> None:
        super().__init__(device_id)
        self.miner = miner
        self.tags = tags or {}
        self._full_power_w = full_power_w  # nameplate (or configured) power; else learnt from the miner
        self._info = DeviceInfo(device_id, "unknown", "unknown", tags=self.tags, vendor_api=type(miner).__name__)
        self._data = DeviceData(device_id, RunState.UNAVAILABLE, 0.0, None, healthy=False, message="not polled yet")
        self._task: asyncio.Task[None] | None = None

    @property
    def capabilities(self) -> Capabilities:
        known = self.full_power_w() is not None
        return Capabilities(curtail=known, curtail_watts=known, target=True, pools=True, locate=True, reboot=True)

    def full_power_w(self) -> float | None:
        return self._full_power_w

    def start(self, interval_s: float = 10.0) -> None:
        """Poll the miner every ``interval_s`` (one fetch; an unreachable miner reads as UNAVAILABLE)."""
        async def loop() -> None:
            while True:
                try:
                    await self.refresh()
                except Exception as exc:  # pyasic raises many kinds of errors: the device is unavailable
                    log.info("pyasic: %s unavailable: %s", self.device_id, exc)
                    self._data = DeviceData(self.device_id, RunState.UNAVAILABLE, 0.0, None, healthy=False,
                                            full_power_w=self._full_power_w, message=str(exc)[:200])
                await asyncio.sleep(interval_s)

        self._task = asyncio.create_task(loop(), name=f"pyasic-{self.device_id}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def refresh(self) -> DeviceData:
        """Poll the miner (pyasic ``get_data``) and remember the reading."""
        data = await self.miner.get_data()
        hashrate = _num(data.hashrate) or 0.0
        power = _num(data.wattage)
        if self._full_power_w is None:
            self._full_power_w = _num(getattr(data, "wattage_limit", None)) or (
                power if hashrate > 0 and self.fraction == 1.0 else None)
        temps = [t for b in data.hashboards for t in (_num(b.chip_temp), _num(b.temp)) if t is not None]
        self._info = DeviceInfo(self.device_id, str(data.model) if data.model else "unknown",
                                str(data.fw_ver or "unknown"), name=f"{data.make or ''} {data.model or ''}".strip(),
                                mac=data.mac, hostname=data.hostname, boards=len(data.hashboards), tags=self.tags,
                                vendor_api=type(self.miner).__name__)
        state = self.state if hashrate > 0 or self.state is not RunState.MINING else RunState.UNAVAILABLE
        self._data = DeviceData(
            self.device_id, state, hashrate, power, hottest_c=max(temps, default=None),
            curtail_fraction=self.fraction, full_power_w=self._full_power_w,
            fans_rpm=tuple(int(f.speed or 0) for f in data.fans), firmware=self._info.firmware,
            pools=tuple(PoolInfo(str(p.url), str(p.user), bool(p.active) if p.active is not None else None)
                        for p in data.pools),
            locate=self.locating, healthy=hashrate > 0)
        return self._data

    def info(self) -> DeviceInfo:
        return self._info

    def get_data(self) -> DeviceData:
        return self._data

    async def _call(self, what: str, call: Awaitable[Any]) -> None:
        try:
            ok = await call
        except (NotImplementedError, AttributeError) as exc:
            raise UnsupportedControl(f"{type(self.miner).__name__} cannot {what}: {exc}") from None
        if ok is False:
            raise UnsupportedControl(f"{type(self.miner).__name__} refused to {what}")

    async def _stop(self, hold: bool) -> None:
        await self._call("stop mining", self.miner.stop_mining())

    async def _run(self, fraction: float) -> None:
        if self.held or self.sleeping:
            await self._call("resume mining", self.miner.resume_mining())
        if fraction < 1.0 or self.fraction < 1.0:
            full = self.full_power_w()
            if full is None:
                raise UnsupportedControl(f"{self.device_id}: full power unknown, cannot curtail to a fraction")
            await self._call("set a power limit", self.miner.set_power_limit(round(full * fraction)))

    async def _set_target(self, command: SetTarget) -> str:
        if command.power_w is None:
            raise UnsupportedControl(f"{type(self.miner).__name__} takes power targets only (through pyasic)")
        await self._call("set a power limit", self.miner.set_power_limit(round(command.power_w)))
        self._full_power_w = command.power_w
        return f"power limit {command.power_w:.0f} W"

    async def _set_pools(self, command: SetPools) -> str:
        async def send() -> bool:
            config = await self.miner.get_config()
            pools = [Pool(url=p.url, user=p.user, password=p.password) for p in command.pools]
            groups = PoolConfig(groups=[PoolGroup(pools=pools)])
            await self.miner.send_config(config.model_copy(update={"pools": groups}))
            return True

        await self._call("set pools", send())
        return f"{len(command.pools)} pool(s) sent"

    async def _locate(self, seconds: float) -> None:
        await self._call("blink its fault light", self.miner.fault_light_on())

    async def _reboot(self) -> str:
        await self._call("reboot", self.miner.reboot())
        return "rebooting"
