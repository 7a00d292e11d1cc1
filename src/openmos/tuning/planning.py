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
    one: FloatArray = fmax_over(voltages, fmax, np.array([v]))[0]
    return one


def fmax_over(voltages: list[float], fmax: list[FloatArray], vs_query: FloatArray) -> FloatArray:
    """``fmax_at`` for many board voltages at once: (len(vs_query), boards, chips), linear in V through the
    swept points (the two lowest below them, the two highest above them)."""
    if len(voltages) == 1:
        return np.repeat(fmax[0][None], len(vs_query), axis=0)
    order = np.argsort(voltages)
    vs = np.asarray(voltages)[order]
    fs = np.stack([fmax[i] for i in order])
    lo = np.minimum(np.maximum(np.searchsorted(vs, vs_query) - 1, 0), len(vs) - 2)
    hi = lo + 1
    w = ((vs_query - vs[lo]) / (vs[hi] - vs[lo]))[:, None, None]
    out = fs[lo] + w * (fs[hi] - fs[lo])
    return np.where((fs[lo] > 0) & (fs[hi] > 0), np.maximum(out, 0.0), 0.0)


@dataclass(frozen=True)
class Plan:
    voltage: float
    scale: float  # k: fraction of the clean limit every chip runs at
    freq: FloatArray  # (boards, chips)
    predicted_power_w: float
    predicted_ths: float


_GRIDS: dict[int, tuple[tuple[float, ...], FloatArray]] = {}  # by identity; the tuple is kept, so ids stay unique


def _grid(freq_grid_mhz: tuple[float, ...]) -> FloatArray:
    """The PLL grid as an array, converted once per grid object (a grid has ~1,700 entries and a plan snaps
    to it twice per candidate voltage; converting, or even hashing, it each time was most of a plan's cost)."""
    known = _GRIDS.get(id(freq_grid_mhz))
    if known is not None and known[0] is freq_grid_mhz:
        return known[1]
    if len(_GRIDS) >= 64:
        _GRIDS.clear()
    array = np.asarray(freq_grid_mhz, dtype=np.float64)
    _GRIDS[id(freq_grid_mhz)] = (freq_grid_mhz, array)
    return array


def snap_down(limits: HardwareLimits, freq: FloatArray) -> FloatArray:
    """Each frequency rounded down to one the PLL can make (0 stays 0: chip off). Down is the safe side."""
    f = np.asarray(freq, dtype=np.float64)
    if not limits.freq_grid_mhz:
        return f
    grid = _grid(limits.freq_grid_mhz)
    idx = np.minimum(np.maximum(np.searchsorted(grid, f + 1e-9, side="right") - 1, 0), len(grid) - 1)
    return np.asarray(np.where(f > 0, grid[idx], 0.0))


def snap_up(limits: HardwareLimits, freq: FloatArray) -> FloatArray:
    """Each frequency rounded up to the next one the PLL can make (for climbing sweeps)."""
    f = np.asarray(freq, dtype=np.float64)
    if not limits.freq_grid_mhz:
        return f
    grid = _grid(limits.freq_grid_mhz)
    idx = np.minimum(np.maximum(np.searchsorted(grid, f - 1e-9, side="left"), 0), len(grid) - 1)
    return np.asarray(np.where(f > 0, grid[idx], 0.0))


def frequencies(limits: HardwareLimits, fmax: FloatArray, margin: FloatArray, scale: float) -> FloatArray:
    f = fmax * (1.0 - margin) * scale
    f = np.minimum(np.maximum(f, limits.freq_min_mhz), limits.freq_max_mhz)  # np.clip's checks cost more
    return snap_down(limits, np.where(fmax > 0, f, 0.0))


def plan_for(limits: HardwareLimits, voltages: list[float], fmax: list[FloatArray], margin: FloatArray,
             power: PowerModel, target_kind: str, target: float) -> Plan:
    """The lowest board voltage whose chips, at their clean limits, can reach the target; then the scale.

    Never below the lowest swept voltage (less one step): chip limits fall faster than linearly toward the
    threshold voltage, so extrapolating down would run chips past their limits. Lower targets are met by
    scaling frequency at that voltage instead (always safe), or by sweeping lower first.

    The candidate voltages are evaluated as arrays (limits, snapping to the PLL grid and reach for every chip
    at every candidate at once) in blocks of 1, 2, 4, ... from the lowest (a curtailment's answer is usually
    the first); the first that reaches the target wins, the highest if none does.
    """
    floor = max(limits.volt_min, min(voltages) - limits.volt_step)
    grid = np.arange(floor, limits.volt_max + 1e-9, limits.volt_step)
    boards = limits.boards
    if not len(grid):
        raise ValueError(f"no board voltage between {floor} and {limits.volt_max} V")
    start, size = 0, 1
    while True:
        vs = grid[start:start + size]
        limit = fmax_over(voltages, fmax, vs)
        sums = frequencies(limits, limit, margin, 1.0).reshape(len(vs), -1).sum(axis=1)
        if target_kind == "power":
            dyn = power.a * vs**2 * sums
            fixed = power.b * boards * vs**2 + power.c
            reach = dyn + fixed
        else:
            reach = sums * limits.hashes_per_mhz / 1e12
        hits = np.flatnonzero(reach >= target)
        last = start + len(vs) >= len(grid)
        if hits.size or last:
            k = int(hits[0]) if hits.size else len(vs) - 1  # out of reach: the highest voltage, full clean speed
            break
        start, size = start + size, 2 * size
    v = float(vs[k])
    if target_kind == "power":
        scale = (target - fixed[k]) / dyn[k] if dyn[k] > 0 else 0.0
    else:
        scale = target / reach[k] if reach[k] > 0 else 0.0
    plan_scale = min(max(float(scale), 0.05), 1.0)
    freq = frequencies(limits, limit[k], margin, plan_scale)
    return Plan(v, plan_scale, freq, power.predict(np.full(boards, v), freq),
                float(freq.sum() * limits.hashes_per_mhz / 1e12))


@dataclass
class Knowledge:
    """What the tuner has learned about one unit: chip limits per swept voltage, trims, dead chips, power.

    Everything is from the tuner's own measurements; it is also what the profile store persists.
    """

    limits: HardwareLimits
    margin: FloatArray  # per-chip trim: fraction below the swept limit
    dead: NDArray[np.bool_]
    sweep_voltages: list[float]
    sweep_fmax: list[FloatArray]
    power_model: PowerModel | None = None
    samples: list[tuple[float, float, float]] | None = None  # (sum V^2 F, sum V^2, wall W) per window

    @classmethod
    def empty(cls, limits: HardwareLimits, start_margin: float) -> Knowledge:
        shape = (limits.boards, limits.chips_per_board)
        return cls(limits, np.full(shape, start_margin), np.zeros(shape, dtype=bool), [], [], None, [])

    @property
    def ready(self) -> bool:
        return bool(self.sweep_fmax) and self.power_model is not None

    def add_sample(self, v_board: FloatArray, freq: FloatArray, wall_w: float, kept: int) -> None:
        v2 = v_board**2
        samples = self.samples if self.samples is not None else []
        samples.append((float((v2 * freq.sum(axis=1)).sum()), float(v2.sum()), wall_w))
        self.samples = samples[-kept:]

    def refit(self) -> None:
        if self.samples:
            self.power_model = PowerModel.fit(self.samples)

    def plan(self, target_kind: str, target: float) -> Plan:
        assert self.power_model is not None
        live = [np.where(self.dead, 0.0, f) for f in self.sweep_fmax]
        return plan_for(self.limits, self.sweep_voltages, live, self.margin, self.power_model, target_kind, target)

    def at(self, voltage: float, scale: float = 1.0) -> Plan:
        """The plan at a given board voltage and scale of every chip's clean limit."""
        assert self.power_model is not None
        top = np.where(self.dead, 0.0, fmax_at(self.sweep_voltages, self.sweep_fmax, voltage))
        freq = frequencies(self.limits, top, self.margin, scale)
        vb = np.full(self.limits.boards, voltage)
        return Plan(voltage, scale, freq, self.power_model.predict(vb, freq),
                    float(freq.sum() * self.limits.hashes_per_mhz / 1e12))
