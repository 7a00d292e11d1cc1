"""The oracle: the best J/TH the hidden chip parameters allow, for scoring tuners. Never used by firmware.

For a multiplier ``lam`` (GH/s given up per W saved), every chip's optimal frequency at board voltage V is
``u*(a) f_crit`` where ``a = lam C V^2 1000 / cores``: the frequency ratio that balances the marginal valid
hashrate against marginal power does not depend on the chip, only on ``a``. Each board then picks the
voltage on a fine grid that maximises ``H - lam P``, and ``lam`` is bisected until the steady-state wall
power (leakage at the temperatures it causes, fans and PSU included) meets the target.
Frequencies are continuous here: real PLLs have ~6 MHz steps, so the oracle is a slight over-estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from openmos.hw.sim import physics
from openmos.hw.sim.fleet import FleetSim
from openmos.hw.sim.models import MinerModel
from openmos.hw.sim.physics import Array

VOLTAGE_STEPS = 160


@dataclass(frozen=True)
class OperatingPoint:
    """Per-board voltages and per-chip frequencies with their modelled steady-state results."""

    board_voltage: Array  # (boards,)
    freq: Array  # (boards, chips)
    wall_power_w: float
    hashrate_ths: float  # valid hashes only

    @property
    def j_per_th(self) -> float:
        return self.wall_power_w / self.hashrate_ths if self.hashrate_ths > 0 else float("inf")


def _optimal_ratio(a: Array, width: float) -> Array:
    """u maximising u (1 - Phi((u - 1)/w)) - a u, by bisection on its derivative (decreasing near 1)."""
    lo = np.full(np.shape(a), 0.5)
    hi = np.full(np.shape(a), 1.3)
    for _ in range(40):
        u = (lo + hi) / 2
        z = (u - 1) / width
        deriv = 1 - ndtr(z) - u * np.exp(-0.5 * z * z) / (np.sqrt(2 * np.pi) * width) - a
        lo = np.where(deriv > 0, u, lo)
        hi = np.where(deriv > 0, hi, u)
    return np.asarray((lo + hi) / 2)


def evaluate(model: MinerModel, k: Array, g: Array, dead: np.ndarray, v_board: Array, freq: Array,
             duty: float, t_inlet: float) -> OperatingPoint:
    """Steady-state wall power and valid hashrate of one miner at given settings (shape (boards, chips))."""
    chip_w, _ = physics.steady_state(model, freq, v_board, g, duty, t_inlet)
    fcrit = physics.critical_frequency(model.chip, k, (v_board / model.domains)[:, None])
    p = np.where(dead, 1.0, physics.error_fraction(model.chip, freq, fcrit))
    ths = float((physics.hashrate_ghs(model.chip, freq) * (1 - p)).sum() / 1000.0)
    wall = float(physics.wall_power_w(model, chip_w.sum(), duty))
    return OperatingPoint(v_board, freq, wall, ths)


class Oracle:
    """Optimal settings for one miner of a fleet, at the fleet's fan duty and inlet temperature."""

    def __init__(self, fleet: FleetSim, miner: int = 0) -> None:
        hidden = fleet.hidden()
        self.model = fleet.model
        self.k, self.g, self.dead = hidden.k[miner], hidden.g[miner], hidden.dead[miner]
        self.duty = float(fleet.duty[miner])
        self.t_inlet = float(fleet.t_inlet[miner])
        lo, hi = self.model.voltage_range
        self.voltages = np.linspace(lo, hi, VOLTAGE_STEPS)
        stock = self.stock_uniform(self.model.stock_freq_mhz)
        _, self._t_j = physics.steady_state(self.model, stock.freq, stock.board_voltage, self.g, self.duty,
                                            self.t_inlet)

    def _evaluate(self, v_board: Array, freq: Array) -> OperatingPoint:
        return evaluate(self.model, self.k, self.g, self.dead, v_board, freq, self.duty, self.t_inlet)

    def stock_uniform(self, freq_mhz: float) -> OperatingPoint:
        """Stock-style operation: every chip at one frequency, stock board voltage."""
        m = self.model
        return self._evaluate(np.full(m.boards, m.stock_board_voltage), np.full((m.boards, m.chips_per_board),
                                                                               float(freq_mhz)))

    def stock_at_power(self, wall_w: float) -> OperatingPoint:
        """Uniform underclock (stock low-power mode) that draws ``wall_w``."""
        lo, hi = self.model.min_freq_mhz, self.model.max_freq_mhz
        for _ in range(50):
            mid = (lo + hi) / 2
            if self.stock_uniform(mid).wall_power_w > wall_w:
                hi = mid
            else:
                lo = mid
        return self.stock_uniform(lo)

    def settings_for(self, lam: float) -> tuple[Array, Array]:
        """Per-board voltage and per-chip frequency maximising H - lam P at this multiplier."""
        m, chip = self.model, self.model.chip
        v = self.voltages[:, None, None]  # (V, 1, 1) against (boards, chips)
        v_chip = v / m.domains
        fcrit = physics.critical_frequency(chip, self.k[None], v_chip)
        a = lam * chip.c_dyn * v_chip**2 * 1000.0 / chip.cores
        ratio = _optimal_ratio(np.broadcast_to(a, (len(self.voltages), 1, 1)), chip.error_width)
        freq = np.clip(ratio * fcrit, m.min_freq_mhz, m.max_freq_mhz)
        p = physics.error_fraction(chip, freq, fcrit)
        gain = physics.hashrate_ghs(chip, freq) * (1 - p) - lam * physics.chip_power(chip, freq, v_chip,
                                                                                      self.g[None], self._t_j[None])
        # A chip whose best contribution is negative (or that is dead) is switched off: leakage only.
        off = (gain < -lam * physics.chip_power(chip, 0.0 * freq, v_chip, self.g[None], self._t_j[None])) | \
            self.dead[None]
        freq = np.where(off, 0.0, freq)
        gain = np.where(off, -lam * physics.chip_power(chip, 0.0 * freq, v_chip, self.g[None], self._t_j[None]),
                        gain)
        best = gain.sum(axis=-1).argmax(axis=0)  # per board
        boards = np.arange(m.boards)
        return self.voltages[best], freq[best, boards]

    def _solve(self, metric: str, target: float) -> OperatingPoint:
        lo, hi = 1e-4, 1e3  # GH/s per W, log-bisected
        best: OperatingPoint | None = None
        for _ in range(60):
            lam = float(np.sqrt(lo * hi))
            point = self._evaluate(*self.settings_for(lam))
            value = point.wall_power_w if metric == "power" else point.hashrate_ths
            if value > target:
                lo = lam  # too much: value more power (raise lam)
            else:
                hi = lam
                best = point
            if hi / lo < 1.0005:
                break
        if best is None:
            raise ValueError(f"{metric} target {target:g} is below what {self.model.name} can reach")
        # Refresh leakage temperatures for the chosen point once and re-solve around it.
        _, self._t_j = physics.steady_state(self.model, best.freq, best.board_voltage, self.g, self.duty,
                                            self.t_inlet)
        return best

    def best_at_power(self, wall_w: float) -> OperatingPoint:
        """Highest valid hashrate within ``wall_w`` (so the best J/TH at that power)."""
        self._solve("power", wall_w)
        return self._solve("power", wall_w)

    def best_at_hashrate(self, ths: float) -> OperatingPoint:
        """Lowest power that still delivers ``ths`` of valid hashrate."""
        self._solve("hashrate", ths)
        point = self._solve("hashrate", ths)
        return point
