"""``mos tune``: autotune a simulated miner in simulated time, with a progress bar and a result table."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from openmos.hw.sim import SimClock
from openmos.hw.sim.backend import SimHardware
from openmos.hw.sim.models import MODELS
from openmos.hw.sim.realism import InletCurve, Realism
from openmos.tuning import PRESETS, Autotuner, CoolingConfig, PerformanceTarget, ProfileStore, TunerStatus


def configure(tune: argparse.ArgumentParser, command: str) -> None:
    tune.description = ("Runs the autotuner against a simulated miner in simulated time and reports modelled "
                        "results. On real hardware the agent runs the same tuner: `mos run --power-target W`.")
    tune.add_argument("model", help=", ".join(MODELS))
    goal = tune.add_mutually_exclusive_group(required=True)
    goal.add_argument("--power", type=float, metavar="W", help="wall power target")
    goal.add_argument("--hashrate", type=float, metavar="THS", help="valid hashrate target")
    goal.add_argument("--profile", choices=list(PRESETS), help="preset: fraction of nameplate power")
    goal.add_argument("--efficiency", type=float, metavar="JTH",
                      help="the most hashrate whose wall J/TH stays at or under this ceiling")
    tune.add_argument("--minutes", type=float, default=30, help="simulated minutes to run (default: %(default)s)")
    tune.add_argument("--seed", type=int, default=0, help="which simulated unit (chip variation)")
    tune.add_argument("--inlet", type=float, default=25.0, help="inlet air temperature, C (the day's mean with "
                      "--day-swing)")
    tune.add_argument("--day-swing", type=float, default=0.0, metavar="C",
                      help="inlet follows a day curve of +/- this many C around --inlet")
    tune.add_argument("--ageing", type=float, default=0.0, metavar="YEARS_PER_DAY",
                      help="age the simulated chips this many years per simulated day (0: no ageing)")
    tune.add_argument("--ideal", action="store_true",
                      help="the old, kind simulator (no temperature-dependent limits, PLL grid, lags, meter error)")
    tune.add_argument("--store", type=Path, default=None, help="profile store JSON (reused on the next run)")


def target_from(args: argparse.Namespace, nameplate_w: float) -> PerformanceTarget:
    return PerformanceTarget.choose(power_w=args.power, hashrate_ths=args.hashrate, profile=args.profile,
                                    nameplate_w=nameplate_w, j_per_th=args.efficiency)


def realism_from(args: argparse.Namespace) -> Realism:
    if args.ideal:
        return Realism.ideal()
    inlet = InletCurve(mean_c=args.inlet, day_amplitude_c=args.day_swing) if args.day_swing else None
    return Realism(ageing_speedup=args.ageing * 365.0, inlet=inlet)


async def _tune(args: argparse.Namespace, console: Console) -> int:
    clock = SimClock(speed=0)
    hw = SimHardware(args.model, seed=args.seed, clock=clock, t_inlet=args.inlet, realism=realism_from(args))
    limits = hw.limits()
    target = target_from(args, limits.nameplate_power_w or 0)
    store = ProfileStore(args.store) if args.store else None
    with Progress(TextColumn("[bold]{task.fields[state]:<8}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TextColumn("{task.fields[phase]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("tune", total=100, state="TUNING", phase="starting")

        def show(status: TunerStatus) -> None:
            progress.update(task, completed=status.percent, state=status.state.value,
                            phase=f"{status.phase} · {status.power_w:,.0f} W · sim t={clock.now() / 60:.1f} min")

        tuner = Autotuner(hw, target, clock=clock, store=store, cooling=CoolingConfig(), progress=show)
        await tuner.run_for(args.minutes * 60)
    watts, ths = hw.modelled_truth()
    table = Table(title=f"{hw.model} tuned for {target} after {args.minutes:g} simulated min (modelled; hard "
                        f"simulator{' off' if args.ideal else ''})")
    for col in ("state", "wall W", "TH/s", "J/TH", "board V", "dead chips", "hottest C", "fan %"):
        table.add_column(col, justify="right")
    s = tuner.status
    table.add_row(s.state.value, f"{watts:,.0f}", f"{ths:.1f}", f"{watts / ths:.2f}" if ths else "-",
                  " ".join(f"{v:.2f}" for v in s.board_voltage), str(len(s.dead_chips)), f"{s.hottest_c:.1f}",
                  f"{s.fan_duty_pct:.0f}" if s.fan_duty_pct is not None else "-")
    console.print(table)
    curve = Table(title="efficiency curve (estimated from the tuner's measurements)")
    for col in ("power W", "TH/s", "J/TH", "source"):
        curve.add_column(col, justify="right")
    for p in tuner.efficiency_curve(8):
        curve.add_row(f"{p.power_w:,.0f}", f"{p.hashrate_ths:.1f}", f"{p.j_per_th:.2f}", p.source)
    console.print(curve)
    for event in s.events[-5:]:
        console.print(f"event: {event}")
    for decision in s.decisions[-8:]:
        console.print(f"decision: {decision}")
    for fault in hw.fault_events():
        console.print(f"fault (ground truth): {fault}")
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_tune(args, Console()))
