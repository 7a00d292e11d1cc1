"""Run a site policy over a market trace, and the perfect-foresight optimum to score it against."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from openmos.energy.economics import revenue_usd_per_th_hour
from openmos.energy.optimizer import DispatchRules, FleetCurves, FleetState, dispatch, point_profit, profit_usd
from openmos.energy.traces import MarketTrace


@dataclass
class SiteLedger:
    """Per-day totals of a simulated run."""

    step_s: float
    revenue: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    energy_kwh: list[float] = field(default_factory=list)
    curtailed_kwh: list[float] = field(default_factory=list)
    wear: list[float] = field(default_factory=list)

    def add(self, day: int, revenue: float, cost: float, energy: float, curtailed: float, wear: float) -> None:
        while len(self.revenue) <= day:
            for series in (self.revenue, self.cost, self.energy_kwh, self.curtailed_kwh, self.wear):
                series.append(0.0)
        self.revenue[day] += revenue
        self.cost[day] += cost
        self.energy_kwh[day] += energy
        self.curtailed_kwh[day] += curtailed
        self.wear[day] += wear

    @property
    def profit(self) -> float:
        return sum(self.revenue) - sum(self.cost) - sum(self.wear)


def run_policy(curves: FleetCurves, market: MarketTrace, rules: DispatchRules, *, always_on: bool = False,
               cap_w: float | None = None, peek: bool = False) -> SiteLedger:
    """Run the optimiser over the trace. Interval i is decided on interval i-1's price and hashprice (what a
    real-time market has published by then) and settled at interval i's price. ``peek=True`` lets the policy
    see interval i's own price -- not achievable live, reported only to show what the information costs."""
    ledger = SiteLedger(market.step_s)
    state = FleetState.all_on(curves)
    full = float(curves.max_power_w.sum())
    dt = market.step_s
    for i in range(market.steps):
        now = i * dt
        known = i if peek else i - 1
        r = revenue_usd_per_th_hour(float(market.hashprice_usd_per_ph_day[i]))
        c = float(market.price_usd_per_kwh[i])
        wear = 0.0
        if not always_on and known >= 0:
            r_known = revenue_usd_per_th_hour(float(market.hashprice_usd_per_ph_day[known]))
            new = dispatch(curves, state, now, dt, r_known, float(market.price_usd_per_kwh[known]), rules, cap_w)
            wear = float((new.on & ~state.on).sum()) * rules.wear_cost_usd
            state = new
        revenue, cost, energy = profit_usd(curves, state.power_w, dt, r, c)
        ledger.add(int(now // 86400), revenue, cost, energy, full / 1000 * dt / 3600 - energy, wear)
    return ledger


def hindsight_optimum(curves: FleetCurves, market: MarketTrace, rules: DispatchRules) -> float:
    """Most profit any schedule could make knowing every future price (per device dynamic programming over
    on/off states with minimum on/off times and wear; ramp limits ignored, so this is an upper bound)."""
    dt = market.step_s
    m_on = max(1, int(np.ceil(rules.min_on_s / dt)))
    m_off = max(1, int(np.ceil(rules.min_off_s / dt)))
    n = curves.devices
    # value[:, :m_on] = on for 1..m_on steps (index m_on-1 = free to switch); value[:, m_on:] = off likewise.
    value = np.zeros((n, m_on + m_off))
    for i in range(market.steps - 1, -1, -1):
        r = revenue_usd_per_th_hour(float(market.hashprice_usd_per_ph_day[i]))
        on_reward = point_profit(curves, r, float(market.price_usd_per_kwh[i])).max(axis=1) * dt / 3600.0
        nxt = value
        new: NDArray[np.float64] = np.empty_like(value)
        # On states: stay on (advance the counter, capped) or, when free, switch off.
        for k in range(m_on):
            stay = nxt[:, min(k + 1, m_on - 1)]
            best = np.maximum(stay, nxt[:, m_on]) if k == m_on - 1 else stay
            new[:, k] = on_reward + best
        for k in range(m_off):
            stay = nxt[:, m_on + min(k + 1, m_off - 1)]
            best = np.maximum(stay, nxt[:, 0] - rules.wear_cost_usd) if k == m_off - 1 else stay
            new[:, m_on + k] = best
        value = new
    return float(value[:, m_on - 1].sum())  # start: everything on, free to switch
