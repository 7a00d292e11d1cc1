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
from openmos.tuning import PRESETS, Autotuner, CoolingConfig, PerformanceTarget, ProfileStore, TunerStatus


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tune = sub.add_parser(
        "tune", help="autotune a simulated miner (fast, simulated time)",
        description="Runs the autotuner against a simulated miner in simulated time and reports modelled "
                    "results. On real hardware the agent runs the same tuner: `mos run --power-target W`.")
    tune.add_argument("model", help=", ".join(MODELS))
    goal = tune.add_mutually_exclusive_group(required=True)
    goal.add_argument("--power", type=float, metavar="W", help="wall power target")
    goal.add_argument("--hashrate", type=float, metavar="THS", help="valid hashrate target")
    goal.add_argument("--profile", choices=list(PRESETS), help="preset: fraction of nameplate power")
    tune.add_argument("--minutes", type=float, default=30, help="simulated minutes to run (default: %(default)s)")
    tune.add_argument("--seed", type=int, default=0, help="which simulated unit (chip variation)")
    tune.add_argument("--inlet", type=float, default=25.0, help="inlet air temperature, C")
    tune.add_argument("--store", type=Path, default=None, help="profile store JSON (reused on the next run)")


def target_from(args: argparse.Namespace, nameplate_w: float) -> PerformanceTarget:
    return PerformanceTarget.choose(power_w=args.power, hashrate_ths=args.hashrate, profile=args.profile,
                                    nameplate_w=nameplate_w)


async def _tune(args: argparse.Namespace, console: Console) -> int:
    clock = SimClock(speed=0)
    hw = SimHardware(args.model, seed=args.seed, clock=clock, t_inlet=args.inlet)
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
    table = Table(title=f"{hw.model} tuned for {target} after {args.minutes:g} simulated min (modelled)")
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
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_tune(args, Console()))
