"""The energy service: price source, optimiser, site cap loop and OpenADR VEN running against real devices.

Every ``interval_s`` it decides which device runs at what power from information available *before* the
interval: a tariff published ahead (fixed, time-of-use) or, for real-time prices, the last interval's price
(a persistence forecast). Each decision is settled afterwards at the price that actually applied. The curves
come from each device's tuner (``DeviceInfo.curve``); devices without one get an assumed flat efficiency,
labelled so. A metered site cap (fast loop) and demand-response events limit the site on top of the plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from openmos.base.tasks import cancel_all
from openmos.energy.demand import DemandResponseVen
from openmos.energy.economics import PriceSource, revenue_usd_per_th_hour
from openmos.energy.optimizer import DispatchRules, FleetCurves, FleetState, dispatch
from openmos.energy.site import CapController, PowerMeter, Site, SiteMember

log = logging.getLogger(__name__)

CURVE_POINTS = 8


def member_curves(members: list[SiteMember], assumed_j_per_th: float = 20.0) -> tuple[FleetCurves, list[str]]:
    """Each member's curve resampled to ``CURVE_POINTS`` points up to its full power, and its source."""
    powers, rates, sources = [], [], []
    for m in members:
        pts = sorted((p for p in m.curve if 0 < p.power_w <= m.full_power_w * 1.001), key=lambda p: p.power_w)
        if len(pts) >= 2:
            p = np.array([x.power_w for x in pts])
            h = np.array([x.hashrate_ths for x in pts])
            grid = np.linspace(p[0], p[-1], CURVE_POINTS)
            powers.append(grid)
            rates.append(np.interp(grid, p, h))
            sources.append("measured" if any(x.source == "measured" for x in pts) else pts[0].source)
        else:
            grid = np.linspace(0.5, 1.0, CURVE_POINTS) * m.full_power_w
            powers.append(grid)
            rates.append(grid / assumed_j_per_th)
            sources.append("assumed")
    if not powers:
        return FleetCurves(np.zeros((0, CURVE_POINTS)), np.zeros((0, CURVE_POINTS))), []
    return FleetCurves(np.vstack(powers), np.vstack(rates)), sources


@dataclass
class Decision:
    start: float
    known_price: float
    price_basis: str  # "tariff" (published ahead) or "last interval" (real-time persistence forecast)
    planned_w: dict[str, float]
    acknowledged: int
    settled_price: float | None = None  # the price that actually applied, once known
    cost_usd: float | None = None


@dataclass
class EnergyService:
    site: Site
    price: PriceSource
    hashprice_usd_per_ph_day: float
    interval_s: float = 300.0
    rules: DispatchRules = field(default_factory=DispatchRules)
    cap_w: float | None = None
    meter: PowerMeter | None = None
    cap_interval_s: float = 2.0
    ven: DemandResponseVen | None = None
    clock: Callable[[], float] = time.time
    assumed_j_per_th: float = 20.0
    decisions: list[Decision] = field(default_factory=list)
    cap: CapController | None = None
    _state: dict[str, tuple[bool, float, float]] = field(default_factory=dict)  # device -> (on, since, power)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.meter is not None and self.cap_w is not None:
            self.cap = CapController(self.site, self.meter, self.cap_w)

    def known_price(self, now: float) -> tuple[float, str]:
        """The price a decision at ``now`` may use: never the interval's own real-time price."""
        if self.price.published_ahead:
            return self.price.price_usd_per_kwh(now), "tariff"
        return self.price.price_usd_per_kwh(now - self.interval_s), "last interval"

    def _limit_w(self, nameplate: float) -> float | None:
        limits = [w for w in (self.cap_w, self.site.fraction * nameplate if self.site.fraction < 1 else None)
                  if w is not None]
        return min(limits) if limits else None

    def _settle(self) -> None:
        for d in self.decisions:
            if d.settled_price is None and self.clock() >= d.start + self.interval_s:
                with contextlib.suppress(LookupError):
                    d.settled_price = self.price.price_usd_per_kwh(d.start)
                    d.cost_usd = sum(d.planned_w.values()) / 1000 * self.interval_s / 3600 * d.settled_price

    async def decide(self) -> Decision:
        """One interval: plan every device from its curve and the known price, command the site, log why."""
        now = self.clock()
        self._settle()
        members = self.site.link.members()
        curves, sources = member_curves(members, self.assumed_j_per_th)
        price, basis = self.known_price(now)
        full = curves.max_power_w
        known = [self._state.get(m.device_id, (True, -1e12, float(f))) for m, f in zip(members, full, strict=True)]
        on = np.array([k[0] for k in known], dtype=bool)
        since = np.array([k[1] for k in known])
        power = np.array([k[2] for k in known])
        new = dispatch(curves, FleetState(on, since, power), now, self.interval_s,
                       revenue_usd_per_th_hour(self.hashprice_usd_per_ph_day), price, self.rules,
                       self._limit_w(float(full.sum())))
        planned = {m.device_id: float(w) for m, w in zip(members, new.power_w, strict=True)}
        for m, o, s, w in zip(members, new.on, new.since, new.power_w, strict=True):
            self._state[m.device_id] = (bool(o), float(s), float(w))
        result = await self.site.dispatch(planned)
        decision = Decision(now, price, basis, planned, result.acknowledged)
        self.decisions.append(decision)
        del self.decisions[:-1000]
        assumed = sources.count("assumed")
        log.info("energy: interval at $%.4f/kWh (%s): %d/%d devices on, %.1f kW planned, %d acknowledged%s",
                 price, basis, int(new.on.sum()), len(members), new.power_w.sum() / 1000, result.acknowledged,
                 f"; {assumed} device(s) without a tuner curve (assumed {self.assumed_j_per_th:g} J/TH)"
                 if assumed else "")
        return decision

    async def _every(self, period: float, step: Callable[[], object]) -> None:
        while True:
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # one failed step (a device, a meter) must not stop the service
                log.exception("energy service step failed; retrying next period")
            await asyncio.sleep(period)

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._every(self.interval_s, self.decide), name="energy-optimiser"))
        if self.cap is not None:
            self._tasks.append(asyncio.create_task(self._every(self.cap_interval_s, self.cap.step), name="site-cap"))
        if self.ven is not None:
            await self.ven.start()

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks.clear()
        if self.ven is not None:
            await self.ven.stop()
