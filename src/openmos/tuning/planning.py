"""Pure planning maths for the tuner: error rates, the power model and the frequency/voltage plan.

Everything here works from measurements the tuner made (per-chip clean frequency limits at the voltages it
swept, wall power samples); nothing assumes the simulator's hidden parameters or laws.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    return _interpolate(*_by_voltage(voltages, fmax), vs_query)


def _by_voltage(voltages: list[float], fmax: list[FloatArray]) -> tuple[FloatArray, FloatArray]:
    """The swept voltages ascending and their limits stacked in that order: (n,), (n, boards, chips)."""
    order = np.argsort(voltages)
    return np.asarray(voltages, dtype=np.float64)[order], np.stack([fmax[i] for i in order])


def _interpolate(vs: FloatArray, fs: FloatArray, vs_query: FloatArray) -> FloatArray:
    """``fmax_over`` on limits already ordered by voltage (``_by_voltage``)."""
    if len(vs) == 1:
        return np.repeat(fs[:1], len(vs_query), axis=0)
    lo = np.minimum(np.maximum(np.searchsorted(vs, vs_query) - 1, 0), len(vs) - 2)
    hi = lo + 1
    w = ((vs_query - vs[lo]) / (vs[hi] - vs[lo])).reshape((-1,) + (1,) * (fs.ndim - 1))
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

    A power plan never predicts more than its target: clocks rounded down to the PLL grid at a scale can add
    up to more than the scale of the rounded full-speed clocks; the scale is then lowered until they do not.
    (``Levels`` keeps the arrays between plans; this builds them for one plan.)
    """
    return Levels(limits, voltages, fmax, margin).plan(power, target_kind, target)


class Levels:
    """The per-level plan arrays of one chip model, kept between plans.

    The candidates are the board voltages from the lowest swept one (less one step) to the supply's maximum,
    in steps; a level's reach is what every chip's clean limit at that voltage (on the PLL grid, less its
    margin) adds up to. Levels are evaluated as arrays in blocks of 1, 2, 4, ... from the lowest and kept, so
    the next plan of the same chip model (a curtailment, the closed loop's next window, a curve point) looks
    its level up instead of evaluating it again; the first that reaches the target wins, the highest if none
    does. ``same_model`` tells whether the arrays still describe a chip model (a sweep or a dead chip makes new
    ones); a trim of a few chips' margins (``retrim``) updates the kept sums for those chips only, and the level a
    plan picks is then evaluated again in full, so a plan is always the one a fresh build would make.
    """

    def __init__(self, limits: HardwareLimits, voltages: list[float], fmax: list[FloatArray], margin: FloatArray,
                 dead: NDArray[np.bool_] | None = None) -> None:
        floor = max(limits.volt_min, min(voltages) - limits.volt_step)
        self.grid: FloatArray = np.arange(floor, limits.volt_max + 1e-9, limits.volt_step)
        if not len(self.grid):
            raise ValueError(f"no board voltage between {floor} and {limits.volt_max} V")
        self.limits = limits
        self.voltages, self.fmax = list(voltages), list(fmax)
        self.margin = np.array(margin, dtype=np.float64)
        self.dead = np.zeros(self.margin.shape, dtype=bool) if dead is None else dead.copy()
        live = fmax if dead is None else [np.where(dead, 0.0, f) for f in fmax]
        self._vs, self._fs = _by_voltage(voltages, live)
        self._v2 = self.grid**2
        self.sums: FloatArray = np.zeros(0)  # full-speed clock sum (MHz) of the first len(sums) candidates
        self._exact = np.zeros(0, dtype=bool)  # which of them were evaluated in full (not updated by a trim)

    def same_model(self, voltages: list[float], fmax: list[FloatArray], dead: NDArray[np.bool_]) -> bool:
        """Built from these limits (the arrays by identity: sweeps append new ones, never edit them)."""
        return (len(fmax) == len(self.fmax) and all(a is b for a, b in zip(fmax, self.fmax, strict=True))
                and voltages == self.voltages and np.array_equal(dead, self.dead))

    def retrim(self, margin: FloatArray) -> bool:
        """Take new margins: the kept sums move by what the changed chips' clocks change (False, nothing
        taken, when more than a quarter of the chips changed: a fresh build costs about the same then)."""
        changed = np.flatnonzero(margin.ravel() != self.margin.ravel())
        if not changed.size:
            return True
        if changed.size * 4 > margin.size:
            return False
        n = len(self.sums)
        if n:
            lim = self.limits
            limit = _interpolate(self._vs, self._fs.reshape(len(self._vs), -1)[:, changed], self.grid[:n])
            before = frequencies(lim, limit, self.margin.ravel()[changed], 1.0)
            after = frequencies(lim, limit, margin.ravel()[changed], 1.0)
            self.sums = self.sums + (after - before).sum(axis=1)
            self._exact[:] = False
        self.margin = np.array(margin, dtype=np.float64)
        return True

    def limit_at(self, k: int) -> FloatArray:
        """Every chip's clean limit at candidate ``k`` (boards, chips)."""
        one: FloatArray = _interpolate(self._vs, self._fs, self.grid[k:k + 1])[0]
        return one

    def _evaluate(self, vs: FloatArray) -> FloatArray:
        """Full-speed clock sums at board voltages ``vs``, in full."""
        top = frequencies(self.limits, _interpolate(self._vs, self._fs, vs), self.margin, 1.0)
        sums: FloatArray = top.reshape(len(vs), -1).sum(axis=1)
        return sums

    def _extend(self) -> None:
        start = len(self.sums)
        vs = self.grid[start:start + max(1, start)]  # blocks of 1, 1, 2, 4, ... (each as long as all before)
        self.sums = np.concatenate([self.sums, self._evaluate(vs)])
        self._exact = np.concatenate([self._exact, np.ones(len(vs), dtype=bool)])

    def _make_exact(self, rows: NDArray[np.intp]) -> None:
        self.sums[rows] = self._evaluate(self.grid[rows])
        self._exact[rows] = True

    def _reach(self, power: PowerModel, target_kind: str, n: int) -> tuple[FloatArray, FloatArray]:
        """(reach, fixed watts) of the first ``n`` candidates."""
        sums = self.sums[:n]
        if target_kind == "power":
            v2 = self._v2[:n]
            fixed = power.b * self.limits.boards * v2 + power.c
            return power.a * v2 * sums + fixed, fixed
        return sums * self.limits.hashes_per_mhz / 1e12, np.zeros(n)

    def plan(self, power: PowerModel, target_kind: str, target: float) -> Plan:
        lim = self.limits
        while True:
            n = len(self.sums)
            reach, fixed = self._reach(power, target_kind, n)
            hits = np.flatnonzero(reach >= target)
            if hits.size or n == len(self.grid):
                k = int(hits[0]) if hits.size else n - 1  # out of reach: the highest voltage, full clean speed
                if self._exact.all():
                    break
                # Sums a trim updated may be off by rounding: the level picked, and any below it that come
                # within rounding of the target, are evaluated in full before they decide.
                near = np.flatnonzero(~self._exact[:k + 1] & (reach[:k + 1] >= target - 1e-6 * max(abs(target), 1)))
                if not self._exact[k]:
                    near = np.union1d(near, [k])
                if not near.size:
                    break
                self._make_exact(near)
                continue
            self._extend()
        v = float(self.grid[k])
        if target_kind == "power":
            dyn = power.a * self._v2[k] * self.sums[k]
            scale = (target - fixed[k]) / dyn if dyn > 0 else 0.0
        else:
            scale = target / reach[k] if reach[k] > 0 else 0.0
        plan_scale = min(max(float(scale), 0.05), 1.0)
        limit = self.limit_at(k)
        freq = frequencies(lim, limit, self.margin, plan_scale)
        volts = np.full(lim.boards, v)
        predicted = power.predict(volts, freq)
        if target_kind == "power" and predicted > target and plan_scale > 0.05:
            plan_scale, freq, predicted = self._under(power, target, float(fixed[k]), limit, volts, plan_scale,
                                                      predicted)
        return Plan(v, plan_scale, freq, predicted, float(freq.sum() * lim.hashes_per_mhz / 1e12))

    def _under(self, power: PowerModel, target: float, fixed: float, limit: FloatArray, volts: FloatArray,
               scale: float, predicted: float) -> tuple[float, FloatArray, float]:
        """Clocks rounded down to the grid at ``scale`` predict more than ``target``: a lower scale whose clocks
        do not. Rounding down never adds, so the scale at which the clocks *before* rounding (clamped to the
        PLL's range) add up to the allowed sum is under the target once rounded; that clamped sum is piecewise
        linear in the scale, solved from the chips it does not clamp (a step or two; bisection if not).
        Returns (scale, clocks, predicted W)."""
        lim = self.limits
        top = limit * (1.0 - self.margin)
        top = top[limit > 0]
        n = top.size
        allowed = (target - fixed) / (power.a * float(volts[0]) ** 2) - 1e-6 * n if power.a > 0 else 0.0

        def clamped(s: float) -> FloatArray:
            return np.minimum(np.maximum(top * s, lim.freq_min_mhz), lim.freq_max_mhz)

        s = scale
        for _ in range(4):
            f = clamped(s)
            free = (f > lim.freq_min_mhz) & (f < lim.freq_max_mhz)
            slope = float(top[free].sum())
            if slope <= 0:
                break
            s = min(max((allowed - float(f[~free].sum())) / slope * (1 - 1e-9), 0.05), s)  # (rounding)
            if float(clamped(s).sum()) <= allowed:
                break
        else:
            lo, hi = 0.05, s
            for _ in range(30):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if float(clamped(mid).sum()) <= allowed else (lo, mid)
            s = lo
        freq = frequencies(lim, limit, self.margin, s)
        return s, freq, power.predict(volts, freq)


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
    levels: Levels | None = field(default=None, repr=False, compare=False)  # kept plan arrays (``Levels``)

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
        """``plan_for`` on what is known, with the level arrays kept until it changes (``Levels``)."""
        assert self.power_model is not None
        levels = self.levels
        if levels is None or not levels.same_model(self.sweep_voltages, self.sweep_fmax, self.dead) \
                or not levels.retrim(self.margin):
            levels = self.levels = Levels(self.limits, self.sweep_voltages, self.sweep_fmax, self.margin, self.dead)
        return levels.plan(self.power_model, target_kind, target)

    def at(self, voltage: float, scale: float = 1.0) -> Plan:
        """The plan at a given board voltage and scale of every chip's clean limit."""
        assert self.power_model is not None
        top = np.where(self.dead, 0.0, fmax_at(self.sweep_voltages, self.sweep_fmax, voltage))
        freq = frequencies(self.limits, top, self.margin, scale)
        vb = np.full(self.limits.boards, voltage)
        return Plan(voltage, scale, freq, self.power_model.predict(vb, freq),
                    float(freq.sum() * self.limits.hashes_per_mhz / 1e12))
