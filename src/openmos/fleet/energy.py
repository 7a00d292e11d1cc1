"""Energy over the fleet bus: ``FleetLink`` is the energy layer's ``SiteLink`` for a site's devices on the
bus (OpenMOS agents and pyasic-managed miners alike).

Members come from the devices' own signed inventory (efficiency curve from their tuner) and telemetry
(full power); the site-wide fast path is one signed ``curtail`` publication acknowledged on each device's
events (accepted, then applied: the site's cap loop waits for the second); the optimiser's per-device
powers are signed ``curtail`` commands with watts, sent concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from openmos.control import CurvePoint
from openmos.energy.site import CurtailResult, SiteMember
from openmos.fleet.control import FleetController
from openmos.fleet.messages import DeviceDoc, DeviceStatus

log = logging.getLogger(__name__)


class FleetLink:
    def __init__(self, controller: FleetController, site: str, user: str = "energy", timeout_s: float = 5.0,
                 concurrency: int = 500) -> None:
        self.controller, self.site, self.user, self.timeout_s = controller, site, user, timeout_s
        self._inventory: dict[str, tuple[CurvePoint, ...]] = {}
        self._full_w: dict[str, float] = {}
        self._limit = asyncio.Semaphore(concurrency)

    def start(self) -> None:
        """Follow the site's verified telemetry (full power of every device) and, from now on, its devices'
        acknowledgements (so that the first curtailment's acks are not published before the devices know)."""
        self.controller.follow_telemetry(self.site, self._on_telemetry)
        self.controller.follow_acks(self.site)

    def _on_telemetry(self, doc: DeviceDoc, body: DeviceStatus) -> None:
        if body.full_power_w:
            self._full_w[doc.device] = body.full_power_w

    async def refresh(self) -> int:
        """Re-read the site's inventory (curves); returns how many devices answered in their own name."""
        found = await self.controller.inventory(self.site)
        self._inventory = {
            inv["device"]: tuple(CurvePoint(float(p["power_w"]), float(p["hashrate_ths"]), str(p.get("source", "")))
                                 for p in inv.get("curve", []))
            for inv in found}
        missing = [d for d in self._inventory if d not in self._full_w]
        for device in missing:  # no telemetry seen yet: ask once
            status = await self.controller.status(self.site, device)
            if status and status.get("full_power_w"):
                self._full_w[device] = float(status["full_power_w"])
        return len(self._inventory)

    def members(self) -> list[SiteMember]:
        """Every device seen in verified telemetry (curves once its inventory has been read)."""
        return [SiteMember(d, w, self._inventory.get(d, ())) for d, w in self._full_w.items()]

    def nameplate_w(self) -> float:
        return sum(self._full_w.values())

    async def curtail_all(self, fraction: float) -> CurtailResult:
        devices = set(self._inventory) | set(self._full_w)
        acked, seconds = await self.controller.curtail_site(self.site, fraction, devices, self.user,
                                                            timeout_s=self.timeout_s)
        requested = fraction * sum(self._full_w.get(d, 0.0) for d in devices)
        return CurtailResult(requested, len(acked & devices), sorted(devices - acked), seconds,
                             applying=self.controller.last_broadcast[self.site].applying)

    async def set_watts(self, watts: Mapping[str, float]) -> CurtailResult:
        began = time.perf_counter()

        async def one(device: str, w: float) -> bool:
            async with self._limit:
                reply = await self.controller.command(self.site, device, "curtail", {"watts": w}, self.user,
                                                      timeout_s=self.timeout_s)
            if not reply.get("ok"):
                log.info("energy: %s refused curtail to %.0f W: %s", device, w, reply.get("error"))
            return bool(reply.get("ok"))

        ids = [d for d in watts if d in self._inventory or d in self._full_w]
        results = await asyncio.gather(*(one(d, watts[d]) for d in ids))
        failed = [d for d, ok in zip(ids, results, strict=True) if not ok]
        return CurtailResult(sum(watts[d] for d in ids), len(ids) - len(failed), failed, time.perf_counter() - began)
