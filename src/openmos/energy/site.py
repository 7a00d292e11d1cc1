"""The site: its devices (reached through a ``SiteLink``), the curtailment fast path, and the cap loop on a
real meter.

A ``SiteLink`` is how energy reaches devices: ``LocalLink`` drives control surfaces in this process (an
agent's ``AgentControl``, pyasic workers), ``openmos.fleet.energy.FleetLink`` drives them over the signed
fleet bus. Either way a device gets the same typed ``Curtail`` command (``openmos.control``): a fraction
for the site-wide fast path, watts for the optimiser, and 0 means sleep.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from openmos.control import Command, Curtail, CurvePoint, DeviceControl, InvalidCommand, UnsupportedControl
from openmos.energy.modbus import DeviceUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteMember:
    """A device as the site sees it: its full power and the efficiency curve its tuner measured."""

    device_id: str
    full_power_w: float
    curve: tuple[CurvePoint, ...] = ()


@dataclass
class CurtailResult:
    requested_w: float
    acknowledged: int
    failed: list[str]
    seconds: float
    # Devices that acknowledged (accepted) the level but have not reported it applied yet; None where an
    # acknowledgement already means applied (a control surface in this process, a command's reply).
    applying: Callable[[], int] | None = None


class SiteLink(Protocol):
    def members(self) -> list[SiteMember]: ...

    def nameplate_w(self) -> float:
        """Sum of the members' full power."""
        ...

    async def curtail_all(self, fraction: float) -> CurtailResult:
        """Every device to ``fraction`` of its full target at once (0 = sleep); waits for the acks."""
        ...

    async def set_watts(self, watts: Mapping[str, float]) -> CurtailResult:
        """Each named device to its own wall power (0 = sleep); waits for the acks."""
        ...


class PowerMeter(Protocol):
    async def read_power_w(self) -> float: ...


class LocalLink:
    """Control surfaces in this process (agents, pyasic workers, simulated devices)."""

    def __init__(self, devices: Sequence[DeviceControl], concurrency: int = 2000, timeout_s: float = 5.0) -> None:
        self.devices = {d.device_id: d for d in devices}
        self.timeout_s = timeout_s
        self._limit = asyncio.Semaphore(concurrency)

    def _full(self) -> dict[str, float]:
        out = {}
        for d in self.devices.values():
            full = d.get_data().full_power_w
            if full and full > 0:
                out[d.device_id] = full
        return out

    def members(self) -> list[SiteMember]:
        return [SiteMember(i, w, self.devices[i].info().curve) for i, w in self._full().items()]

    def nameplate_w(self) -> float:
        return sum(self._full().values())

    async def _send(self, commands: Mapping[str, Command], requested_w: float) -> CurtailResult:
        began = time.perf_counter()

        async def one(device_id: str, command: Command) -> bool:
            async with self._limit:
                try:
                    ack = await asyncio.wait_for(self.devices[device_id].execute(command), self.timeout_s)
                except (TimeoutError, ConnectionError, OSError, UnsupportedControl, InvalidCommand) as exc:
                    log.info("energy: %s refused or did not answer: %s", device_id, exc)
                    return False
                return ack.ok

        ids = list(commands)
        results = await asyncio.gather(*(one(i, commands[i]) for i in ids))
        failed = [i for i, ok in zip(ids, results, strict=True) if not ok]
        return CurtailResult(requested_w, len(ids) - len(failed), failed, time.perf_counter() - began)

    async def curtail_all(self, fraction: float) -> CurtailResult:
        return await self._send({i: Curtail(fraction=fraction) for i in self.devices}, fraction * self.nameplate_w())

    async def set_watts(self, watts: Mapping[str, float]) -> CurtailResult:
        known = {i: w for i, w in watts.items() if i in self.devices}
        return await self._send({i: Curtail(watts=w) for i, w in known.items()}, sum(known.values()))


class Site:
    """The site's devices as one controllable load; ``fraction`` is the last site-wide limit in force."""

    def __init__(self, link: SiteLink) -> None:
        self.link = link
        self.fraction = 1.0
        self.changed_at = -math.inf  # time.monotonic() when the devices last acknowledged a new level
        self.last: CurtailResult | None = None  # of the last site-wide level

    def applying(self) -> int:
        """Devices that acknowledged the last site-wide level and are still applying it."""
        return self.last.applying() if self.last is not None and self.last.applying is not None else 0

    @property
    def nameplate_w(self) -> float:
        return self.link.nameplate_w()

    async def set_fraction(self, fraction: float) -> CurtailResult:
        """Send every device the same fraction at once and wait for the acknowledgements."""
        fraction = min(max(fraction, 0.0), 1.0) if math.isfinite(fraction) else 0.0
        self.fraction = fraction
        result = self.last = await self.link.curtail_all(fraction)
        self.changed_at = time.monotonic()
        if result.failed:
            log.warning("curtail: %d device(s) did not acknowledge: %s", len(result.failed),
                        ", ".join(result.failed[:10]))
        return result

    async def curtail_to_w(self, watts: float, margin: float = 0.04) -> CurtailResult:
        """The fast path: "curtail to X kW now" reaches every device of the site.

        It aims ``margin`` below X, so that the metered power actually settles under the cap rather than
        approaching it from above: each device reaches its share from its own power model (a tuner's is good
        to ~2 % away from where it was measured) and its own meter (PSU readings are off by ~1 %).
        """
        full = self.nameplate_w
        return await self.set_fraction(watts * (1 - margin) / full if full else 0.0)

    async def dispatch(self, watts: Mapping[str, float]) -> CurtailResult:
        """The optimiser's plan: each device at its own power."""
        result = await self.link.set_watts(watts)
        if result.failed:
            log.warning("dispatch: %d device(s) did not acknowledge: %s", len(result.failed),
                        ", ".join(result.failed[:10]))
        return result


@dataclass
class CapController:
    """Keeps measured site power under ``cap_w`` by scaling every device, from real meter readings.

    If the meter stops answering, the controller holds the last level that was measured to be safe (it
    never ramps up blind) and raises an alert; it resumes normal control when readings return.

    After a new site level (its own or the fast path's), readings for ``settle_s`` may still show the old one
    (device ramps, the supply's slew, the meter's refresh): the controller does not act on them -- cutting
    again on a stale reading overshoots, every device a second time. Nor while devices that acknowledged the
    level still report applying it (for up to ``apply_timeout_s``: a device that never reports must not
    freeze the loop). It raises the level (``recover_step``)
    only once readings have stayed well under the cap for ``recover_after_s``: devices still finishing a
    ramp read low for a while, and raising on those overshoots the cap when they arrive.
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
    settle_s: float = 5.0
    apply_timeout_s: float = 30.0
    recover_after_s: float = 30.0
    low_since: float | None = None  # time.monotonic() of the first of the present run of low readings
    # A reading above this multiple of max(cap, nameplate) is a meter fault, not a load: one 1e38 W glitch cut
    # the whole site to ~0 % and the 2 %-per-30 s recovery took ~25 minutes to undo it.
    plausible_factor: float = 10.0
    corrections: int = 0  # level changes made on readings (for reports)

    def _alert(self, text: str) -> None:
        self.alerts.append(text)
        log.warning("site cap: %s", text)
        if self.on_alert:
            self.on_alert(text)

    async def step(self) -> float:
        """One control step; returns the fraction now in force."""
        try:
            measured = await self.meter.read_power_w()
            if not math.isfinite(measured) or measured < 0:
                raise DeviceUnavailable("meter reading is not a power (not finite, or negative)")
            ceiling = self.plausible_factor * max(self.cap_w, self.site.nameplate_w)
            if measured > ceiling:
                raise DeviceUnavailable(f"meter reading {measured:.3g} W is over {ceiling:.3g} W, "
                                        f"{self.plausible_factor:g}x the cap or the nameplate: not plausible")
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
        now = time.monotonic()
        low = measured < self.cap_w * (1 - 2 * self.margin)
        self.low_since = (self.low_since if self.low_since is not None else now) if low else None
        since = now - self.site.changed_at
        if since < self.settle_s or (since < self.apply_timeout_s and self.site.applying()):
            return fraction  # the devices are still moving to the last level
        if measured > self.cap_w:
            fraction = fraction * self.cap_w * (1 - self.margin) / measured
            self.corrections += 1
            await self.site.set_fraction(fraction)
        else:
            self.last_safe_fraction = fraction
            if low and fraction < 1.0 and self.low_since is not None and now - self.low_since >= self.recover_after_s:
                self.corrections += 1
                self.low_since = None
                await self.site.set_fraction(min(1.0, fraction + self.recover_step))
        return self.site.fraction
