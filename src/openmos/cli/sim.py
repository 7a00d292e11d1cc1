"""``mos sim``: list the simulated models and print their calibration report."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from openmos.hw.sim.models import MODELS, get_model
from openmos.hw.sim.report import calibrate, efficiency_curves, plot_efficiency


def configure(sim: argparse.ArgumentParser, command: str) -> None:
    sim.description = "The ASIC simulator's models. Every figure it prints is modelled, not measured on hardware."
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="ACTION")
    sim_sub.add_parser("list", help="list the simulated miner models")
    report = sim_sub.add_parser("report", help="stock vs nameplate, and a PNG of J/TH vs power (stock vs oracle)")
    report.add_argument("model", help=", ".join(MODELS))
    report.add_argument("--miners", type=int, default=25, help="simulated units to calibrate over")
    report.add_argument("--seed", type=int, default=0, help="which simulated units (chip-to-chip variation)")
    report.add_argument("--plot", type=Path, default=None, help="PNG path (default: sim-report-MODEL.png)")


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.sim_command == "list":
        table = Table("key", "model", "chip", "boards x chips", "stock MHz", "nameplate TH/s", "nameplate W")
        for key, m in MODELS.items():
            table.add_row(key, m.name, m.chip.name, f"{m.boards} x {m.chips_per_board}", f"{m.stock_freq_mhz:g}",
                          f"{m.nameplate_ths:g}", f"{m.nameplate_w:g}")
        console.print(table)
        return 0
    model = get_model(args.model)
    cal = calibrate(model, miners=args.miners, seed=args.seed)
    table = Table(title=f"{model.name}: modelled stock operation at 25 C inlet, median of {args.miners} units")
    for col in ("", "TH/s", "W", "J/TH"):
        table.add_column(col, justify="right")
    table.add_row("nameplate", f"{model.nameplate_ths:.1f}", f"{model.nameplate_w:.0f}",
                  f"{model.nameplate_j_per_th:.2f}")
    table.add_row("modelled stock", f"{cal.median_ths:.1f}", f"{cal.median_w:.0f}",
                  f"{cal.median_w / cal.median_ths:.2f}")
    table.add_row("difference", f"{cal.median_ths / model.nameplate_ths - 1:+.1%}",
                  f"{cal.median_w / model.nameplate_w - 1:+.1%}", "")
    console.print(table)
    curves = efficiency_curves(model, seed=args.seed)
    eff = Table(title="J/TH vs power, one simulated unit (modelled)")
    for col in ("power", "stock W", "stock J/TH", "uniform V/F J/TH", "oracle W", "oracle J/TH",
                "oracle gain vs uniform V/F"):
        eff.add_column(col, justify="right")
    for c in curves:
        eff.add_row(f"{c.fraction:.0%}", f"{c.stock.wall_power_w:.0f}", f"{c.stock.j_per_th:.2f}",
                    f"{c.uniform.j_per_th:.2f}", f"{c.oracle.wall_power_w:.0f}", f"{c.oracle.j_per_th:.2f}",
                    f"{c.oracle_gain:+.1%}")
    console.print(eff)
    console.print("stock: one frequency at stock voltage (a stock low-power mode); uniform V/F: the best single "
                  "frequency and voltage (preset firmwares), the fair baseline for per-chip tuning", style="dim")
    path = plot_efficiency(model, curves, args.plot or Path(f"sim-report-{model.key}.png"))
    console.print(f"plot written to {path}")
    return 0
