"""Energy benchmark: a simulated 1,000-miner site over a 30-day synthetic price trace (modelled).

Devices: 600 S21, 250 S19j Pro, 150 S21 XP. Each model's efficiency curve is the one its autotuner
measured: a real ``Autotuner`` tunes a simulated unit (45 simulated minutes) and its ``efficiency_curve``
(learned from its own sweeps) is resampled up to nameplate power, exactly as ``mos energy run`` does with
``member_curves``; +/-2 % unit-to-unit variation. Prices: the documented synthetic ERCOT-like trace in
``openmos.energy.traces`` (daily shape, AR(1) noise, scarcity spikes, negative night prices). Rules: 30 min
minimum on/off, $0.20 wear per restart, 50 W/s ramp.

Printed in one run: the OpenMOS policy deciding each 5-minute interval on the last published price (what
a real-time market has told it by then) and settled at the interval's real price; always-on; the
perfect-foresight optimum (dynamic programming over the whole month, an upper bound); and, for
reference only, the same policy allowed to peek at each interval's own price (not achievable live).

Usage: python benchmarks/energy.py [--days 30] [--miners 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from openmos.energy.optimizer import DispatchRules, FleetCurves
from openmos.energy.simulate import hindsight_optimum, run_policy
from openmos.energy.traces import synthetic_market
from openmos.testbed.curves import tuned_curve_sync

MIX = {"s21": 0.60, "s19jpro": 0.25, "s21xp": 0.15}
FRACTIONS = np.linspace(0.5, 1.0, 8)


def site_curves(miners: int, seed: int) -> FleetCurves:
    rng = np.random.default_rng(seed)
    powers, rates = [], []
    for key, share in MIX.items():
        p, h = tuned_curve_sync(key)
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
    logging.disable(logging.INFO)
    curves = site_curves(args.miners, args.seed)
    market = synthetic_market(days=args.days, seed=args.seed)
    rules = DispatchRules()
    policy = run_policy(curves, market, rules)
    peek = run_policy(curves, market, rules, peek=True)
    always = run_policy(curves, market, rules, always_on=True)
    best = hindsight_optimum(curves, market, rules)
    print(f"{args.miners} simulated miners, {args.days} days, {market.steps} price intervals "
          f"(mean ${market.price_usd_per_kwh.mean():.3f}/kWh, max ${market.price_usd_per_kwh.max():.2f}); modelled")
    print(f"{'strategy':<34}{'profit $':>12}{'revenue $':>12}{'energy MWh':>12}{'curtailed MWh':>15}")
    for name, ledger in (("OpenMOS (decides on last price)", policy), ("always on", always),
                         ("peeking at own price (reference)", peek)):
        print(f"{name:<34}{ledger.profit:>12,.0f}{sum(ledger.revenue):>12,.0f}{sum(ledger.energy_kwh) / 1000:>12,.1f}"
              f"{sum(ledger.curtailed_kwh) / 1000:>15,.1f}")
    print(f"{'perfect foresight (upper bound)':<34}{best:>12,.0f}")
    print(f"\nOpenMOS / perfect foresight: {policy.profit / best:.1%} (goal >= 95 %; decided on the last price, "
          f"settled at the real one)")
    print(f"peeking policy / foresight:  {peek.profit / best:.1%} (what knowing the interval's own price would add: "
          f"not achievable live)")
    print(f"OpenMOS / always on:         {policy.profit / always.profit:.3f}x "
          f"(+${policy.profit - always.profit:,.0f} over {args.days} days)")
    print(f"benchmark wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
