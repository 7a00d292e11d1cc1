"""Calibration report: modelled stock figures vs nameplate, and J/TH vs power for stock, the best uniform
frequency and voltage, and the oracle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openmos.hw.sim.fleet import FleetSim
from openmos.hw.sim.models import MinerModel
from openmos.hw.sim.oracle import OperatingPoint, Oracle

POWER_FRACTIONS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class CalibrationRow:
    seed: int
    hashrate_ths: float
    wall_power_w: float
    hottest_chip_c: float

    @property
    def j_per_th(self) -> float:
        return self.wall_power_w / self.hashrate_ths


@dataclass(frozen=True)
class Calibration:
    model: MinerModel
    rows: list[CalibrationRow]

    @property
    def median_ths(self) -> float:
        return float(np.median([r.hashrate_ths for r in self.rows]))

    @property
    def median_w(self) -> float:
        return float(np.median([r.wall_power_w for r in self.rows]))


def calibrate(model: MinerModel, miners: int = 25, seed: int = 0, t_inlet: float = 25.0) -> Calibration:
    """Stock operation of ``miners`` simulated units (each with its own chips) at steady state."""
    fleet = FleetSim(model, miners=miners, seed=seed, t_inlet=t_inlet, sample_counters=False)
    fleet.settle()
    power, ths = fleet.true_wall_power(), fleet.valid_hashrate_ths()
    hottest = fleet.t_j.max(axis=(1, 2))
    return Calibration(model, [CalibrationRow(seed, float(ths[i]), float(power[i]), float(hottest[i]))
                               for i in range(miners)])


@dataclass(frozen=True)
class EfficiencyPoint:
    """One power level: stock underclock (stock voltage), the best uniform frequency with voltage scaling (what
    preset-based firmwares do: the fair baseline for per-chip tuning) and the oracle (per-chip frequencies)."""

    fraction: float
    stock: OperatingPoint
    uniform: OperatingPoint
    oracle: OperatingPoint

    @property
    def oracle_gain(self) -> float:
        """J/TH gained by per-chip tuning over the best uniform V/F (not over the stock-voltage underclock)."""
        return self.uniform.j_per_th / self.oracle.j_per_th - 1


def efficiency_curves(model: MinerModel, seed: int = 0,
                      fractions: tuple[float, ...] = POWER_FRACTIONS) -> list[EfficiencyPoint]:
    """Stock underclock, best uniform V/F and oracle at each power level for one miner."""
    oracle = Oracle(FleetSim(model, miners=1, seed=seed, sample_counters=False))
    stock_w = oracle.stock_uniform(model.stock_freq_mhz).wall_power_w
    out = []
    for frac in fractions:
        try:
            watts = frac * stock_w
            out.append(EfficiencyPoint(frac, oracle.stock_at_power(watts), oracle.best_uniform_at_power(watts),
                                       oracle.best_at_power(watts)))
        except ValueError:
            continue
    return out


def plot_efficiency(model: MinerModel, curves: list[EfficiencyPoint], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for points, marker, label in (
            ([c.stock for c in curves], "o-", "stock: uniform frequency, stock voltage"),
            ([c.uniform for c in curves], "^-", "best uniform frequency and voltage"),
            ([c.oracle for c in curves], "s-", "oracle: per-chip frequency + per-board voltage")):
        ax.plot([p.wall_power_w for p in points], [p.j_per_th for p in points], marker, label=label)
    ax.axhline(model.nameplate_j_per_th, color="grey", ls=":", label="nameplate J/TH")
    ax.set_xlabel("wall power (W, modelled)")
    ax.set_ylabel("J/TH (modelled)")
    ax.set_title(f"{model.name}: modelled efficiency vs power (simulator, not measured)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
