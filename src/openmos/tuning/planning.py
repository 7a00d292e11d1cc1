"""Pure planning maths for the tuner: error rates, the power model and the frequency/voltage plan.

Everything here works from measurements the tuner made (per-chip clean frequency limits at the voltages it
swept, wall power samples); nothing assumes the simulator's hidden parameters or laws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from openmos.hw.interface import HardwareLimits

FloatArray = NDArray[np.float64]


def error_fraction(nonces: NDArray[np.int64], errors: NDArray[np.int64]) -> FloatArray:
    total = nonces + errors
    return np.where(total > 0, errors / np.maximum(total, 1), 0.0).astype(np.float64)


@dataclass(frozen=True)
class PowerModel:
    """wall W = a * sum_b V_b^2 F_b + b * sum_b V_b^2 + c, with F_b the sum of chip MHz on board b."""

    a: float
    b: float
    c: float

    @classmethod
    def fit(cls, samples: list[tuple[float, float, float]]) -> PowerModel:
        """Least squares over (sum V^2 F, sum V^2, measured wall W) samples."""
        x = np.array([[s[0], s[1], 1.0] for s in samples])
        y = np.array([s[2] for s in samples])
        if len({round(s[1], 6) for s in samples}) < 2:
            # One voltage only: V^2 leakage and the constant cannot be told apart; fold both into c.
            coef, *_ = np.linalg.lstsq(x[:, [0, 2]], y, rcond=None)
            return cls(float(coef[0]), 0.0, float(coef[1]))
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        return cls(float(coef[0]), float(coef[1]), float(coef[2]))

    def predict(self, v_board: FloatArray, freq: FloatArray) -> float:
        v2 = v_board**2
        return float(self.a * (v2 * freq.sum(axis=1)).sum() + self.b * v2.sum() + self.c)

    def dynamic_share(self, v_board: FloatArray, freq: FloatArray) -> float:
        total = self.predict(v_board, freq)
        dyn = self.a * float((v_board**2 * freq.sum(axis=1)).sum())
        return dyn / total if total > 0 else 1.0


def fmax_at(voltages: list[float], fmax: list[FloatArray], v: float) -> FloatArray:
    """Per-chip clean-frequency limit at board voltage ``v``, linear in V through the swept points."""
    if len(voltages) == 1:
        return fmax[0].copy()
    order = np.argsort(voltages)
    vs = np.asarray(voltages)[order]
    fs = np.stack([fmax[i] for i in order])
    if v <= vs[0]:
        lo, hi = 0, 1
    elif v >= vs[-1]:
        lo, hi = len(vs) - 2, len(vs) - 1
    else:
        hi = int(np.searchsorted(vs, v))
        lo = hi - 1
    w = (v - vs[lo]) / (vs[hi] - vs[lo])
    out = fs[lo] + w * (fs[hi] - fs[lo])
    return np.where((fs[lo] > 0) & (fs[hi] > 0), np.maximum(out, 0.0), 0.0)


@dataclass(frozen=True)
class Plan:
    voltage: float
    scale: float  # k: fraction of the clean limit every chip runs at
    freq: FloatArray  # (boards, chips)
    predicted_power_w: float
    predicted_ths: float


def frequencies(limits: HardwareLimits, fmax: FloatArray, margin: FloatArray, scale: float) -> FloatArray:
    f = fmax * (1.0 - margin) * scale
    f = np.clip(f, limits.freq_min_mhz, limits.freq_max_mhz)
    return np.where(fmax > 0, f, 0.0)


def plan_for(limits: HardwareLimits, voltages: list[float], fmax: list[FloatArray], margin: FloatArray,
             power: PowerModel, target_kind: str, target: float) -> Plan:
    """The lowest board voltage whose chips, at their clean limits, can reach the target; then the scale.

    Never below the lowest swept voltage (less one step): chip limits fall faster than linearly toward the
    threshold voltage, so extrapolating down would run chips past their limits. Lower targets are met by
    scaling frequency at that voltage instead (always safe), or by sweeping lower first.
    """
    floor = max(limits.volt_min, min(voltages) - limits.volt_step)
    grid = np.arange(floor, limits.volt_max + 1e-9, limits.volt_step)
    boards = limits.boards
    best: Plan | None = None
    for v in grid:
        top = frequencies(limits, fmax_at(voltages, fmax, float(v)), margin, 1.0)
        vb = np.full(boards, float(v))
        ths = float(top.sum() * limits.hashes_per_mhz / 1e12)
        if target_kind == "power":
            dyn = power.a * float(v) ** 2 * top.sum()
            fixed = power.b * boards * float(v) ** 2 + power.c
            reach = dyn + fixed
            scale = (target - fixed) / dyn if dyn > 0 else 0.0
        else:
            reach = ths
            scale = target / ths if ths > 0 else 0.0
        plan_scale = min(max(scale, 0.05), 1.0)
        freq = frequencies(limits, fmax_at(voltages, fmax, float(v)), margin, plan_scale)
        plan = Plan(float(v), plan_scale, freq, power.predict(vb, freq),
                    float(freq.sum() * limits.hashes_per_mhz / 1e12))
        best = plan
        if reach >= target:
            return plan
    assert best is not None
    return best  # the target is out of reach: the highest voltage at full clean speed
