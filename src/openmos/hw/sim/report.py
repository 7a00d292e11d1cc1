"""Calibration report: modelled stock figures vs nameplate, and J/TH vs power for stock and oracle."""

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


def efficiency_curves(model: MinerModel, seed: int = 0,
                      fractions: tuple[float, ...] = POWER_FRACTIONS) -> list[tuple[float, OperatingPoint,
                                                                                     OperatingPoint]]:
    """(power fraction of stock, stock uniform underclock, oracle) at each power level for one miner."""
    oracle = Oracle(FleetSim(model, miners=1, seed=seed, sample_counters=False))
    stock_w = oracle.stock_uniform(model.stock_freq_mhz).wall_power_w
    out = []
    for frac in fractions:
        try:
            out.append((frac, oracle.stock_at_power(frac * stock_w), oracle.best_at_power(frac * stock_w)))
        except ValueError:
            continue
    return out


def plot_efficiency(model: MinerModel, curves: list[tuple[float, OperatingPoint, OperatingPoint]],
                    path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot([s.wall_power_w for _, s, _ in curves], [s.j_per_th for _, s, _ in curves], "o-",
            label="stock: uniform frequency, stock voltage")
    ax.plot([o.wall_power_w for _, _, o in curves], [o.j_per_th for _, _, o in curves], "s-",
            label="oracle: per-chip frequency + per-board voltage")
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
