"""Simulator speed in fleet mode, and the oracle's J/TH gain over stock uniform underclock (all modelled).

- seconds per 1 s physics step for 1k and 10k simulated S21 (with per-chip nonce/error counters sampled),
  single core, measured in this run; goal < 0.5 s for 10k.
- oracle J/TH vs stock-style uniform underclock, and vs the best uniform frequency with voltage scaling, at
  the same wall power (60/70/80/100 % of modelled stock power), S21 and S19j Pro, several seeds, on the hard
  simulator. Figures are modelled, not measured on hardware.

Usage: python benchmarks/sim_step.py [--seeds 3] [--steps 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import time

import numpy as np

from openmos.hw.sim import FleetSim, get_model
from openmos.hw.sim.oracle import Oracle


def step_seconds(miners: int, steps: int) -> float:
    fleet = FleetSim(get_model("s21"), miners=miners, seed=1)
    fleet.step(1.0)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        fleet.step(1.0)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    print("fleet-mode step time, S21, one core (measured now)")
    for n in (1_000, 10_000):
        s = step_seconds(n, args.steps)
        chips = n * 324
        goal = f"  goal < 0.5 s: {'met' if s < 0.5 else 'NOT met'}" if n == 10_000 else ""
        print(f"  {n:>6,} miners ({chips / 1e6:.2f} M chips): {s:.3f} s per step{goal}")

    print("\noracle J/TH gain at iso-power (modelled; mean over seeds): over stock uniform underclock / over the"
          " best uniform frequency with voltage scaling")
    fractions = (0.6, 0.7, 0.8, 1.0)
    print(f"  {'model':<10}" + "".join(f"{f'{f:.0%} power':>18}" for f in fractions))
    for key in ("s21", "s19jpro"):
        gains = np.zeros((2, args.seeds, len(fractions)))
        for seed in range(args.seeds):
            oracle = Oracle(FleetSim(get_model(key), miners=1, seed=seed, sample_counters=False))
            stock_w = oracle.stock_uniform(get_model(key).stock_freq_mhz).wall_power_w
            for j, frac in enumerate(fractions):
                stock = oracle.stock_at_power(frac * stock_w)
                uniform = oracle.best_uniform_at_power(frac * stock_w)
                best = oracle.best_at_power(frac * stock_w)
                gains[0, seed, j] = stock.j_per_th / best.j_per_th - 1
                gains[1, seed, j] = uniform.j_per_th / best.j_per_th - 1
        mean = gains.mean(axis=1)
        print(f"  {key:<10}" + "".join(f"{mean[0, j]:>9.1%} /{mean[1, j]:>6.1%}" for j in range(len(fractions))))


if __name__ == "__main__":
    main()
