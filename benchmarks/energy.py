"""Energy benchmark: a simulated 1,000-miner site over a 30-day synthetic price trace (modelled).

Devices: 600 S21, 250 S19j Pro, 150 S21 XP; each unit's efficiency curve comes from the simulator's
per-chip oracle at 8 power levels (50-100 % of stock) with +/-2 % unit-to-unit variation. Prices: the
documented synthetic ERCOT-like trace in ``openmos.energy.traces`` (daily shape, AR(1) noise, scarcity
spikes to $5/kWh, negative night prices). Rules: 30 min minimum on/off, $0.20 wear per restart, 50 W/s
ramp. Printed in one run: profit of the OpenMOS policy (online: knows only the current price), of
always-on, and of the perfect-foresight optimum (dynamic programming over the whole month).

Usage: python benchmarks/energy.py [--days 30] [--miners 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from openmos.energy.optimizer import DispatchRules, FleetCurves
from openmos.energy.simulate import hindsight_optimum, run_policy
from openmos.energy.traces import synthetic_market
from openmos.hw.sim import FleetSim, get_model
from openmos.hw.sim.oracle import Oracle

MIX = {"s21": 0.60, "s19jpro": 0.25, "s21xp": 0.15}
FRACTIONS = np.linspace(0.5, 1.0, 8)


def model_curve(key: str) -> tuple[np.ndarray, np.ndarray]:
    oracle = Oracle(FleetSim(get_model(key), miners=1, seed=0, sample_counters=False))
    stock = oracle.stock_uniform(get_model(key).stock_freq_mhz).wall_power_w
    points = [oracle.best_at_power(f * stock) for f in FRACTIONS]
    return np.array([p.wall_power_w for p in points]), np.array([p.hashrate_ths for p in points])


def site_curves(miners: int, seed: int) -> FleetCurves:
    rng = np.random.default_rng(seed)
    powers, rates = [], []
    for key, share in MIX.items():
        p, h = model_curve(key)
        n = round(miners * share)
        powers.append(np.tile(p, (n, 1)))
        rates.append(np.tile(h, (n, 1)) * rng.lognormal(0.0, 0.02, (n, 1)))
    return FleetCurves(np.vstack(powers), np.vstack(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--miners", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    began = time.perf_counter()
    curves = site_curves(args.miners, args.seed)
    market = synthetic_market(days=args.days, seed=args.seed)
    rules = DispatchRules()
    policy = run_policy(curves, market, rules)
    always = run_policy(curves, market, rules, always_on=True)
    best = hindsight_optimum(curves, market, rules)
    print(f"{args.miners} simulated miners, {args.days} days, {market.steps} price intervals "
          f"(mean ${market.price_usd_per_kwh.mean():.3f}/kWh, max ${market.price_usd_per_kwh.max():.2f}); modelled")
    print(f"{'strategy':<34}{'profit $':>12}{'revenue $':>12}{'energy MWh':>12}{'curtailed MWh':>15}")
    for name, ledger in (("OpenMOS optimiser (online)", policy), ("always on", always)):
        print(f"{name:<34}{ledger.profit:>12,.0f}{sum(ledger.revenue):>12,.0f}{sum(ledger.energy_kwh) / 1000:>12,.1f}"
              f"{sum(ledger.curtailed_kwh) / 1000:>15,.1f}")
    print(f"{'perfect foresight (upper bound)':<34}{best:>12,.0f}")
    print(f"\nOpenMOS / perfect foresight: {policy.profit / best:.1%} (goal >= 95 %)")
    print(f"OpenMOS / always on:         {policy.profit / always.profit:.3f}x "
          f"(+${policy.profit - always.profit:,.0f} over {args.days} days)")
    print(f"benchmark wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
