"""The site optimiser: which device runs at which power, from efficiency curves, prices and a site cap.

Per device, running at curve point k earns ``H_k * r - P_k * c`` per hour (r: revenue per TH-hour from
the hashprice, c: electricity price). Without a cap each device picks its best point or switches off;
with a cap, a multiplier on power is raised until the site fits (bisection), which makes the least
efficient machines give way first. Switching costs wear (thermal cycling), and devices honour minimum
on/off times and ramp limits. Vectorised over all devices with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class FleetCurves:
    """Efficiency curves of N devices, K points each, sorted by power: power_w and hashrate_ths (N, K)."""

    power_w: FloatArray
    hashrate_ths: FloatArray

    def __post_init__(self) -> None:
        if self.power_w.shape != self.hashrate_ths.shape or self.power_w.ndim != 2:
            raise ValueError("curves must be two (devices, points) arrays of the same shape")

    @property
    def devices(self) -> int:
        return int(self.power_w.shape[0])

    @property
    def max_power_w(self) -> FloatArray:
        return np.asarray(self.power_w[:, -1])


@dataclass(frozen=True)
class DispatchRules:
    min_on_s: float = 1800.0
    min_off_s: float = 1800.0
    ramp_w_per_s: float = 50.0  # per device
    wear_cost_usd: float = 0.20  # per off->on cycle (thermal cycling)
    wear_horizon_s: float = 3600.0  # a cycle must pay for itself within this


@dataclass
class FleetState:
    on: NDArray[np.bool_]
    since: FloatArray  # time of the last on/off switch
    power_w: FloatArray

    @classmethod
    def all_on(cls, curves: FleetCurves, now: float = -1e12) -> FleetState:
        n = curves.devices
        return cls(np.ones(n, dtype=bool), np.full(n, now), curves.max_power_w.copy())


def point_profit(curves: FleetCurves, revenue_per_th_h: float, price_per_kwh: float, power_weight: float = 0.0
                 ) -> FloatArray:
    """$/h at every curve point, with an extra ``power_weight`` $/kWh penalty (the cap multiplier)."""
    return np.asarray(curves.hashrate_ths * revenue_per_th_h - curves.power_w / 1000.0 * (price_per_kwh + power_weight))


def choose(curves: FleetCurves, revenue_per_th_h: float, price_per_kwh: float, power_weight: float,
           running_bonus: FloatArray) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Best point per device and whether running beats being off (``running_bonus`` favours the status quo)."""
    profit = point_profit(curves, revenue_per_th_h, price_per_kwh, power_weight)
    best = profit.argmax(axis=1)
    best_profit = profit[np.arange(curves.devices), best]
    return best_profit + running_bonus > 0, best


def dispatch(curves: FleetCurves, state: FleetState, now: float, dt: float, revenue_per_th_h: float,
             price_per_kwh: float, rules: DispatchRules, cap_w: float | None = None) -> FleetState:
    """One decision step: the new on/off state and power per device."""
    n = curves.devices
    # Wear: leaving the current state costs half a cycle, amortised over the wear horizon.
    hysteresis = rules.wear_cost_usd / 2 / (rules.wear_horizon_s / 3600.0)
    bonus = np.where(state.on, hysteresis, -hysteresis)
    locked_on = state.on & (now - state.since < rules.min_on_s)
    locked_off = ~state.on & (now - state.since < rules.min_off_s)

    def plan(weight: float) -> tuple[NDArray[np.bool_], FloatArray]:
        run, best = choose(curves, revenue_per_th_h, price_per_kwh, weight, bonus)
        run = (run | locked_on) & ~locked_off
        if weight > 0:  # under the cap, a locked-on device still runs at its lowest point
            best = np.where(locked_on & ~run, 0, best)
        target = np.where(run, curves.power_w[np.arange(n), best], 0.0)
        # Ramp limits: power moves at most ramp * dt per step while a device stays on.
        step = rules.ramp_w_per_s * dt
        stayed_on = run & state.on
        target = np.where(stayed_on, np.clip(target, state.power_w - step, state.power_w + step), target)
        return run, target

    run, target = plan(0.0)
    if cap_w is not None and target.sum() > cap_w:
        lo, hi = 0.0, 10.0  # $/kWh shadow price of the cap
        for _ in range(40):
            mid = (lo + hi) / 2
            _, target_m = plan(mid)
            if target_m.sum() > cap_w:
                lo = mid
            else:
                hi = mid
        run, target = plan(hi)
        if target.sum() > cap_w:  # locked-on devices alone exceed the cap: scale them (safety first)
            target = target * cap_w / target.sum()
    switched = run != state.on
    since = np.where(switched, now, state.since)
    return FleetState(run, since, target)


def interpolate_hashrate(curves: FleetCurves, power_w: FloatArray) -> FloatArray:
    """Each device's hashrate at its power, linear between curve points (0 W: off; below the curve's
    lowest point the device runs its lowest point scaled down)."""
    p, h = curves.power_w, curves.hashrate_ths
    rows = np.arange(curves.devices)
    k = np.clip((p <= power_w[:, None]).sum(axis=1) - 1, 0, p.shape[1] - 2)
    p0, p1, h0, h1 = p[rows, k], p[rows, k + 1], h[rows, k], h[rows, k + 1]
    w = np.clip((power_w - p0) / np.maximum(p1 - p0, 1e-9), 0.0, 1.0)
    inside = h0 + w * (h1 - h0)
    below = h[:, 0] * power_w / p[:, 0]
    out = np.where(power_w < p[:, 0], below, inside)
    return np.asarray(np.where(power_w > 0, out, 0.0))


def profit_usd(curves: FleetCurves, power_w: FloatArray, dt: float, revenue_per_th_h: float,
               price_per_kwh: float) -> tuple[float, float, float]:
    """(revenue, cost, energy kWh) of running devices at ``power_w`` for ``dt`` seconds (hashrate interpolated
    on each device's curve; 0 W means off)."""
    hashrate = interpolate_hashrate(curves, power_w)
    hours = dt / 3600.0
    energy = float(power_w.sum()) / 1000.0 * hours
    revenue = float(hashrate.sum()) * revenue_per_th_h * hours
    return revenue, energy * price_per_kwh, energy
