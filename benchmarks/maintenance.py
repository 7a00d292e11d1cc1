"""Predictive maintenance on a simulated fleet (all figures *modelled*): the health model against the plain
threshold rule fleet tools alert on today, both calibrated on one seed and scored on another, in this run.

The fleet: S21s with daily inlet swings, chips binned at first boot by their error counters (as stock firmware
does), and failures drawn by ``openmos.hw.sim.precursors`` (chip wear-out, board paste/solder ageing, failing
regulators, fan bearings, ageing PSUs, and sudden chip/domain/fan/PSU failures and stuck sensors that give no
warning). Physics steps every ``--sample`` seconds (exact exponential relaxation), telemetry is read at each
step as hardware reports it, and the model never sees the simulator's hidden state.

Calibration (training seed): per channel, the lowest flag level whose false alarms stay within an equal share
of ``--budget`` per 1,000 miner-days; the threshold rule's thresholds are calibrated the same way (its
strongest fair form). Scored (evaluation seed): recall of failures flagged >= 24 h ahead (announced ones, and
all), false alarms per 1,000 miner-days, median actual lead.

Usage: python benchmarks/maintenance.py [--miners 1000] [--days 90] [--train-miners 300] [--sample 900]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import math
import multiprocessing
import time
from collections.abc import MutableMapping
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
from rich.progress import Progress

from openmos.hw.sim import FleetSim, get_model
from openmos.hw.sim.precursors import draw_failures
from openmos.hw.sim.realism import InletCurve, Realism
from openmos.maintenance.evaluate import (
    DAY,
    HORIZON_S,
    RULE_CHANNELS,
    RunResult,
    Scores,
    bin_weak_chips,
    calibrate,
    merge,
    run_fleet,
    score,
)
from openmos.maintenance.model import CHANNELS


def simulate(model_key: str, miners: int, days: float, sample_s: float, seed: int,
             progress: MutableMapping[int, float] | None = None) -> RunResult:
    """One rack of ``miners``, its own seed; ``progress[seed]`` follows its simulated days."""
    model = get_model(model_key)
    fleet = FleetSim(model, miners=miners, seed=seed, realism=Realism(inlet=InletCurve(mean_c=25.0)))
    fleet.settle(1800, 300)
    bin_weak_chips(fleet)
    # Failures due up to a horizon past the end: flags near the end are judged against what came next.
    failures = draw_failures(model, miners, days * DAY + HORIZON_S, np.random.default_rng(seed + 77),
                             start_s=fleet.time)
    fleet.schedule_failures(failures)

    def tick(d: float) -> None:
        if progress is not None:
            progress[seed] = d
    result = run_fleet(fleet, days, sample_s, progress=tick)
    t0 = fleet.time - days * DAY
    result.failures = [dataclasses.replace(f, onset_s=f.onset_s - t0, fail_s=f.fail_s - t0)
                       for f in failures]
    return result


def fleet_of(model_key: str, miners: int, racks: int, days: float, sample_s: float, seed: int,
             pool: ProcessPoolExecutor, progress: MutableMapping[int, float]) -> list[Future[RunResult]]:
    """``miners`` as ``racks`` independently seeded racks, simulated in parallel (merged afterwards)."""
    sizes = [miners // racks + (i < miners % racks) for i in range(racks)]
    return [pool.submit(simulate, model_key, n, days, sample_s, seed * 1000 + i, progress)
            for i, n in enumerate(sizes) if n]


def pct(x: float) -> str:
    return "  n/a" if math.isnan(x) else f"{x:6.1%}"


def row(name: str, s: Scores) -> str:
    lead = "n/a" if math.isnan(s.median_lead_h) else f"{s.median_lead_h:.0f} h"
    return (f"  {name:<28}{pct(s.recall_announced):>10} ({s.caught_announced:>3}/{s.announced:<3})"
            f"{pct(s.recall_all):>9} ({s.caught_all:>3}/{s.failures:<3}){s.false_per_1000_days:>10.2f}"
            f" ({s.false_alarms:>4}){lead:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--miners", type=int, default=1000, help="evaluation fleet size")
    parser.add_argument("--train-miners", type=int, default=300, help="calibration fleet size (another seed)")
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--sample", type=float, default=900.0, help="seconds between telemetry samples")
    parser.add_argument("--budget", type=float, default=0.5,
                        help="false alarms per 1,000 miner-days allowed on the training fleet (all channels)")
    parser.add_argument("--model", default="s21")
    parser.add_argument("--train-seed", type=int, default=101)
    parser.add_argument("--seed", type=int, default=202)
    parser.add_argument("--jobs", type=int, default=5,
                        help="processes: one for the calibration fleet, the rest share the evaluation fleet as "
                             "independently seeded racks")
    args = parser.parse_args()
    start = time.perf_counter()
    racks = max(1, args.jobs - 1)
    with multiprocessing.Manager() as manager, ProcessPoolExecutor(max_workers=args.jobs) as pool, \
            Progress() as progress:
        done = manager.dict()
        train_f = fleet_of(args.model, args.train_miners, 1, args.days, args.sample, args.train_seed, pool, done)
        test_f = fleet_of(args.model, args.miners, racks, args.days, args.sample, args.seed, pool, done)
        n = len(train_f) + len(test_f)
        task = progress.add_task(f"{args.train_miners + args.miners:,} miners x {args.days:g} days (simulated)",
                                 total=args.days * n)
        while not all(f.done() for f in train_f + test_f):
            progress.update(task, completed=sum(done.values()))
            time.sleep(1.0)
        train = merge([f.result() for f in train_f])
        test = merge([f.result() for f in test_f])
    levels = calibrate(train, args.budget, CHANNELS)
    rule_levels = calibrate(train, args.budget, RULE_CHANNELS)
    took = time.perf_counter() - start
    print(f"\nPredictive maintenance, MODELLED: {args.miners:,} simulated {get_model(args.model).name} x "
          f"{args.days:g} days ({racks} racks), telemetry every {args.sample / 60:g} min; calibrated on "
          f"{args.train_miners:,} miners (seed {args.train_seed}), scored on seed {args.seed}; {took / 60:.1f} min")
    print("  levels (x default band): model " + ", ".join(f"{k} {v:g}" for k, v in levels.items())
          + "; rule " + ", ".join(f"{k} {v:g}" for k, v in rule_levels.items()))
    header = (f"  {'':<28}{'recall >= 24 h':>22}{'recall, all':>19}{'false / 1k miner-days':>24}"
              f"{'median lead':>12}")
    for name, res in (("training seed", train), ("evaluation seed", test)):
        print(f"\n {name} ({res.miners:,} miners, announced = failures with a precursor):")
        print(header)
        print(row("health model", score(res, levels, CHANNELS)))
        print(row("threshold rule (calibrated)", score(res, rule_levels, RULE_CHANNELS)))
        print(row("threshold rule (defaults)", score(res, dict.fromkeys(RULE_CHANNELS, 1.0), RULE_CHANNELS)))
    model_s = score(test, levels, CHANNELS)
    rule_s = score(test, rule_levels, RULE_CHANNELS)
    print("\n evaluation seed by component: failures (announced) -> caught >= 24 h: model / rule")
    for comp, (n, ann, hit) in sorted(model_s.by_component.items()):
        print(f"  {comp:<8}{n:>5} ({ann:>3}) -> {hit:>4} / {rule_s.by_component.get(comp, (0, 0, 0))[2]:>4}")
    print(" false alarms by channel (evaluation seed): " + ", ".join(
        f"{c} {score(test, levels, (c,)).false_alarms}" for c in CHANNELS) + "; rule " + ", ".join(
        f"{c} {score(test, rule_levels, (c,)).false_alarms}" for c in RULE_CHANNELS))
    within, estimated = model_s.estimate_within(2.0)
    print(f" lead-time estimates when flagged (evaluation seed): {within} of {estimated} caught failures with an "
          f"estimate were within a factor 2 of the actual lead")
    goal_r = model_s.recall_announced >= 0.8
    goal_f = model_s.false_per_1000_days <= 1.0
    print(f"\n goals (evaluation seed): recall >= 80 % of announced failures >= 24 h ahead: "
          f"{'met' if goal_r else 'NOT met'} ({pct(model_s.recall_announced).strip()}); <= 1 false alarm per "
          f"1,000 miner-days: {'met' if goal_f else 'NOT met'} ({model_s.false_per_1000_days:.2f})")


if __name__ == "__main__":
    main()
