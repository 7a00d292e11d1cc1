"""The site controller: devices, the curtailment fast path, and the cap loop on a real meter."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from openmos.energy.modbus import DeviceUnavailable

log = logging.getLogger(__name__)


class SiteDevice(Protocol):
    """A miner as the site sees it."""

    device_id: str
    max_power_w: float

    async def set_power_fraction(self, fraction: float) -> bool:
        """Run at ``fraction`` of full power (0 = sleep). True when the device acknowledged."""
        ...


class PowerMeter(Protocol):
    async def read_power_w(self) -> float: ...


@dataclass
class CurtailResult:
    requested_w: float
    acknowledged: int
    failed: list[str]
    seconds: float


class Site:
    def __init__(self, devices: Sequence[SiteDevice], concurrency: int = 2000) -> None:
        self.devices = list(devices)
        self.fraction = 1.0
        self._limit = asyncio.Semaphore(concurrency)

    @property
    def nameplate_w(self) -> float:
        return sum(d.max_power_w for d in self.devices)

    async def set_fraction(self, fraction: float) -> CurtailResult:
        """Send every device the same fraction at once and wait for the acknowledgements."""
        fraction = min(max(fraction, 0.0), 1.0)
        self.fraction = fraction
        began = time.perf_counter()

        async def one(device: SiteDevice) -> bool:
            async with self._limit:
                try:
                    return await asyncio.wait_for(device.set_power_fraction(fraction), 5.0)
                except (TimeoutError, ConnectionError, OSError):
                    return False

        results = await asyncio.gather(*(one(d) for d in self.devices))
        failed = [d.device_id for d, ok in zip(self.devices, results, strict=True) if not ok]
        if failed:
            log.warning("curtail: %d device(s) did not acknowledge: %s", len(failed), ", ".join(failed[:10]))
        return CurtailResult(fraction * self.nameplate_w, len(results) - len(failed), failed,
                             time.perf_counter() - began)

    async def curtail_to_w(self, watts: float, margin: float = 0.02) -> CurtailResult:
        """The fast path: "curtail to X kW now" reaches every device of the site.

        It aims ``margin`` below X, so that the metered power actually settles under the cap rather than
        approaching it from above.
        """
        return await self.set_fraction(watts * (1 - margin) / self.nameplate_w if self.nameplate_w else 0.0)


@dataclass
class CapController:
    """Keeps measured site power under ``cap_w`` by scaling every device, from real meter readings.

    If the meter stops answering, the controller holds the last level that was measured to be safe (it
    never ramps up blind) and raises an alert; it resumes normal control when readings return.
    """

    site: Site
    meter: PowerMeter
    cap_w: float
    margin: float = 0.02
    recover_step: float = 0.02
    alerts: list[str] = field(default_factory=list)
    last_safe_fraction: float = 1.0
    meter_ok: bool = True
    on_alert: Callable[[str], None] | None = None
    last_reading_w: float | None = None

    def _alert(self, text: str) -> None:
        self.alerts.append(text)
        log.warning("site cap: %s", text)
        if self.on_alert:
            self.on_alert(text)

    async def step(self) -> float:
        """One control step; returns the fraction now in force."""
        try:
            measured = await self.meter.read_power_w()
        except DeviceUnavailable as exc:
            if self.meter_ok:
                self._alert(f"meter stopped answering ({exc}); holding the last safe level "
                            f"{self.last_safe_fraction:.0%}")
                self.meter_ok = False
            if self.site.fraction > self.last_safe_fraction:
                await self.site.set_fraction(self.last_safe_fraction)
            return self.site.fraction
        if not self.meter_ok:
            self._alert("meter answering again; cap control resumed")
            self.meter_ok = True
        self.last_reading_w = measured
        fraction = self.site.fraction
        if measured > self.cap_w:
            fraction = fraction * self.cap_w * (1 - self.margin) / measured
            await self.site.set_fraction(fraction)
        else:
            self.last_safe_fraction = fraction
            if measured < self.cap_w * (1 - 2 * self.margin) and fraction < 1.0:
                await self.site.set_fraction(min(1.0, fraction + self.recover_step))
        return self.site.fraction
