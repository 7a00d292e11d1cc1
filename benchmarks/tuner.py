"""Autotuner on simulated S21 and S19j Pro units (several seeds), scored against the oracle and stock.

For each model, seed and power target (60/70/80/100 % of the unit's modelled stock power) the tuner runs
for 30 simulated minutes from a cold start (no saved profile), seeing only counters, sensors and input
power. Then, at the fan duty the tuner ended with (same cooling for everyone):
- tuned J/TH vs the oracle's best J/TH at the same wall power (goal <= 1.5 % above)
- tuned J/TH vs stock-style uniform underclock at the same wall power (goal >= 8 % better at 70 %)
- simulated time until J/TH was within 2 % of the oracle with power within 1 % of target (goal <= 15 min)
- final power error vs target (goal within 1 %)
All figures are modelled by the simulator, not measured on hardware.

Usage: python benchmarks/tuner.py [--seeds 3] [--minutes 30]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np

from openmos.hw.sim import SimClock
from openmos.hw.sim.backend import SimHardware
from openmos.hw.sim.oracle import Oracle
from openmos.tuning import Autotuner, PerformanceTarget

FRACTIONS = (0.6, 0.7, 0.8, 1.0)


@dataclass
class RunResult:
    vs_oracle: float  # tuned J/TH / oracle J/TH - 1
    vs_stock: float  # stock J/TH / tuned J/TH - 1
    minutes_to_2pct: float
    power_error: float


async def run_one(model: str, seed: int, fraction: float, minutes: float) -> RunResult:
    clock = SimClock(speed=0)
    hw = SimHardware(model, seed=seed, clock=clock)
    start_oracle = Oracle(hw.oracle_view())
    target_w = fraction * start_oracle.stock_uniform(hw.limits().stock_freq_mhz).wall_power_w
    tuner = Autotuner(hw, PerformanceTarget.power(target_w), clock=clock)
    trace: list[tuple[float, float, float]] = []
    while clock.now() < minutes * 60:
        await tuner.run_for(30)
        trace.append((clock.now(), *hw.modelled_truth()))
    oracle = Oracle(hw.oracle_view())  # at the fan duty and temperatures the tuner settled on
    watts, ths = trace[-1][1], trace[-1][2]
    best = oracle.best_at_power(watts)
    stock = oracle.stock_at_power(watts)
    tuned = watts / ths
    within = [t for t, w, h in trace if w / h <= best.j_per_th * 1.02 and abs(w / target_w - 1) <= 0.01]
    return RunResult(tuned / best.j_per_th - 1, stock.j_per_th / tuned - 1,
                     (within[0] / 60) if within else float("inf"), watts / target_w - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    began = time.perf_counter()
    print(f"{'model':<9}{'power':>6}  {'vs oracle':>10} {'worst':>7}  {'vs stock':>9}  {'t<2% (min)':>10} "
          f"{'worst':>6}  {'power err':>9}")
    worst = {"oracle": -1.0, "stock70": 1.0, "minutes": 0.0, "power": 0.0}
    for model in ("s21", "s19jpro"):
        for frac in FRACTIONS:
            runs = [asyncio.run(run_one(model, seed, frac, args.minutes)) for seed in range(args.seeds)]
            vo = np.array([r.vs_oracle for r in runs])
            vs = np.array([r.vs_stock for r in runs])
            mins = np.array([r.minutes_to_2pct for r in runs])
            perr = np.array([abs(r.power_error) for r in runs])
            print(f"{model:<9}{frac:>6.0%}  {vo.mean():>+10.2%} {vo.max():>+7.2%}  {vs.mean():>+9.1%}  "
                  f"{mins.mean():>10.1f} {mins.max():>6.1f}  {perr.max():>9.2%}")
            worst["oracle"] = max(worst["oracle"], float(vo.max()))
            worst["minutes"] = max(worst["minutes"], float(mins.max()))
            worst["power"] = max(worst["power"], float(perr.max()))
            if frac == 0.7:
                worst["stock70"] = min(worst["stock70"], float(vs.min()))
    print("\ngoals (worst case over models, seeds and targets; modelled):")
    print(f"  J/TH above oracle      {worst['oracle']:+.2%}  (goal <= +1.5 %)")
    print(f"  vs stock at 70 % power {worst['stock70']:+.1%}  (goal >= +8 %)")
    print(f"  time to within 2 %     {worst['minutes']:.1f} min (goal <= 15 min simulated)")
    print(f"  power target error     {worst['power']:.2%}  (goal within 1 %)")
    print(f"benchmark wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
