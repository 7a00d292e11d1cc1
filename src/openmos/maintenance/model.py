"""The health model: robust per-component statistics against each component's own baseline and its siblings.

Channels (each a score; 1.0 = on the threshold, flagged once held above it for ``persist`` samples):

- ``chip``: hardware-error count over the last ~12 h against the count the chip's own 10-day error rate
  predicts (Poisson z), and the valid-nonce deficit against the nonces its hashes should have found. A chip
  that was always weak is its own baseline and is not flagged; a chip whose errors climb is.
- ``board``: the board's chip temperature against its sibling boards (same fans, same inlet air, same
  settings: the same power), against the 10-day baseline of that difference -- paste and solder ageing.
- ``vr``: the regulator's temperature against its sibling boards, its output sag and ripple.
- ``fan``: a fan's RPM against the other fans at the same duty, against its baseline, and its jitter.
- ``psu``: PSU efficiency (output / input) and output voltage against the PSU's baseline.
- ``sensor``: a chip-temperature sensor that has stopped moving while its neighbours move (flatline).

Lead time is extrapolated from the feature's trend (its ~12 h mean against its 2-day mean) to the level the
model treats as a failure; it is an estimate, and the report says so.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from openmos.maintenance.snapshot import Array, Snapshot

HOUR = 3600.0
DAY = 86400.0
CHANNELS = ("chip", "board", "vr", "fan", "psu", "sensor")


@dataclass(frozen=True)
class Thresholds:
    """Score scales: each channel's score is ``excess / scale``; flagged at score >= ``level[channel]``."""

    chip_z: float = 8.0  # Poisson z of excess errors (or missing nonces) in the short window
    chip_ratio: float = 3.0  # ... and the short-window rate at least this many times the baseline rate
    chip_min_rate: float = 0.002  # ... and at least this error fraction
    board_c: float = 3.0  # C hotter than the sibling boards, beyond the baseline difference
    vr_c: float = 5.0  # C hotter regulator than the siblings' regulators
    vr_sag: float = 0.006  # relative sag of the regulator output against its baseline
    vr_ripple: float = 0.004  # rise of relative ripple (std of the output reading)
    fan_drop: float = 0.06  # share of RPM lost against the other fans, beyond the baseline
    fan_jitter: float = 0.02  # rise of the relative RPM jitter
    psu_eff: float = 0.015  # efficiency points lost
    psu_v: float = 0.012  # relative output-voltage drift
    sensor_flat_c: float = 0.02  # a sensor moving less than this (C rms) while its neighbours move is stuck
    level: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 1.0))
    persist: int = 4  # consecutive samples above the level before a flag is raised
    warmup_s: float = DAY  # no flags before the baselines have this much history
    short_s: float = 12 * HOUR
    mid_s: float = 2 * DAY
    base_s: float = 10 * DAY


@dataclass(frozen=True)
class _Cause:
    """One feature of a channel scored from several: its detail array, threshold scale and explanation."""

    feature: str
    detail: str  # the channel's detail array holding the value
    scale: str  # the ``Thresholds`` field the level multiplies into the band
    reason: str  # ``str.format`` template with ``x`` (the value) and ``band`` (the value flagged from)


# Per channel, its causes in the order of the channel's score parts (the detail's ``which`` indexes them).
_CAUSES: dict[str, tuple[_Cause, ...]] = {
    "vr": (
        _Cause("vr_temp_vs_siblings_c", "heat", "vr_c",
               "voltage regulator {x:.1f} C hotter than its siblings than its baseline (band {band:.3g})"),
        _Cause("vr_sag", "sag", "vr_sag", "voltage regulator {x:.2%} output sag than its baseline (band {band:.3g})"),
        _Cause("vr_ripple", "ripple", "vr_ripple",
               "voltage regulator {x:.2%} more ripple than its baseline (band {band:.3g})"),
    ),
    "fan": (
        _Cause("rpm_at_duty_drop", "drop", "fan_drop",
               "turns {x:.0%} slower than the other fans at the same duty, against its baseline "
               "(band {band:.0%}): bearing wear"),
        _Cause("rpm_jitter", "jitter", "fan_jitter",
               "RPM jitter up {x:.1%} against its baseline (band {band:.1%}): bearing noise"),
    ),
    "psu": (
        _Cause("psu_efficiency_loss", "loss", "psu_eff",
               "efficiency down {x:.1%} points from its baseline (band {band:.1%}): ageing"),
        _Cause("psu_vout_drift", "drift", "psu_v",
               "output voltage drifted {x:.1%} from its baseline (band {band:.1%})"),
    ),
}


@dataclass(frozen=True)
class Finding:
    """One flagged component, explained."""

    component: str  # chip / board / vr / fan / psu / sensor
    miner: int
    board: int | None
    index: int | None
    feature: str
    value: float
    band: float  # the value at which the feature is flagged (threshold level x scale)
    score: float  # value / band
    lead_time_h: float | None  # estimated time to failure; None: not extrapolable (not trending)
    reason: str

    def where(self) -> str:
        parts = [f"board {self.board}" if self.board is not None else "",
                 f"{self.component} {self.index}" if self.index is not None else
                 (self.component if self.board is None else "")]
        return " ".join(p for p in parts if p) or self.component

    def to_dict(self) -> dict[str, object]:
        return {"component": self.component, "board": self.board, "index": self.index, "feature": self.feature,
                "value": _round(self.value), "band": _round(self.band), "score": _round(self.score),
                "lead_time_h": None if self.lead_time_h is None else round(self.lead_time_h, 1),
                "reason": self.reason}


def _round(x: float) -> float | None:
    return float(f"{x:.4g}") if math.isfinite(x) else None


class _Ewma:
    """Exponentially weighted mean that skips NaN readings; until it has a time constant's worth of readings
    it is the plain mean of what it has seen (a baseline started at one hour of the day is not that hour's)."""

    def __init__(self, shape: tuple[int, ...], tau_s: float) -> None:
        self.tau = tau_s
        self.value = np.full(shape, np.nan)
        self.n = np.zeros(shape)

    def update(self, x: Array, dt: float) -> Array:
        a = 1.0 - math.exp(-max(dt, 0.0) / self.tau)
        ok = np.isfinite(x)
        self.n = self.n + ok
        gain = np.maximum(a, 1.0 / np.maximum(self.n, 1.0))
        start = np.where(np.isfinite(self.value), self.value, 0.0)
        self.value = np.where(ok, start + gain * (np.where(ok, x, 0.0) - start), self.value)
        return self.value


class _Decayed:
    """Decayed sum of counts (an EWMA window of counts): sum_k x_k exp(-(t - t_k) / tau)."""

    def __init__(self, shape: tuple[int, ...], tau_s: float) -> None:
        self.tau = tau_s
        self.value = np.zeros(shape)

    def update(self, x: Array, dt: float) -> Array:
        """``x`` must be finite (the caller zeroes what it does not count)."""
        self.value *= math.exp(-max(dt, 0.0) / self.tau)
        self.value += x
        return self.value


def _siblings(x: Array) -> Array:
    """Each board's value minus the mean of the miner's other boards (NaN with no finite sibling)."""
    ok = np.isfinite(x)
    total = np.where(ok, x, 0.0).sum(axis=-1, keepdims=True)
    count = ok.sum(axis=-1, keepdims=True)
    others = count - ok
    mean_others = np.where(others > 0, (total - np.where(ok, x, 0.0)) / np.maximum(others, 1), np.nan)
    return np.asarray(x - mean_others)


def _lead_h(short: Array, mid: Array, level: float, lag_s: float) -> Array:
    """Hours until ``short`` reaches ``level`` at the slope (short - mid) / lag; NaN if not heading there.
    An EWMA of a ramp lags the ramp by its tau: two of them are ``lag_s`` = tau_mid - tau_short apart."""
    slope = (short - mid) / max(lag_s, 1.0)  # per second
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (level - short) / slope
    t = np.where((slope > 0) & np.isfinite(t), np.clip(t, 0.0, 60 * DAY), np.nan)
    return np.asarray(t / HOUR)


class HealthModel:
    """Online model over a fleet of identical-shape miners; ``update`` with each new snapshot."""

    def __init__(self, shape: tuple[int, int, int], n_sensors: int, n_fans: int,
                 thresholds: Thresholds | None = None) -> None:
        self.th = thresholds or Thresholds()
        m, b, c = shape
        th = self.th
        chips, boards, fans, miners = (m, b, c), (m, b), (m, n_fans), (m,)
        self._prev: Snapshot | None = None
        self._t0: float | None = None
        self.time_s = 0.0
        # chip: decayed counts over the short and base windows
        self._err_s, self._tix_s, self._exp_s, self._val_s = (_Decayed(chips, th.short_s) for _ in range(4))
        self._err_b, self._tix_b = _Decayed(chips, th.base_s), _Decayed(chips, th.base_s)
        self._err_m, self._tix_m = _Decayed(chips, th.mid_s), _Decayed(chips, th.mid_s)
        # board temperature and regulator against siblings; fan ratio; psu
        self._tb = [_Ewma(boards, tau) for tau in (th.short_s / 6, th.mid_s, th.base_s)]
        self._vrt = [_Ewma(boards, tau) for tau in (th.short_s / 6, th.mid_s, th.base_s)]
        self._vrv = [_Ewma(boards, tau) for tau in (th.short_s / 2, th.mid_s, th.base_s)]
        self._vr_rip = [_Ewma(boards, th.short_s / 2), _Ewma(boards, th.base_s)]
        self._fan = [_Ewma((m, n_fans), tau) for tau in (th.short_s / 6, th.mid_s, th.base_s)]
        self._fan_jit = [_Ewma((m, n_fans), th.short_s / 2), _Ewma((m, n_fans), th.base_s)]
        self._eff = [_Ewma(miners, tau) for tau in (th.short_s / 2, th.mid_s, th.base_s)]
        self._pv = [_Ewma(miners, tau) for tau in (th.short_s / 2, th.mid_s, th.base_s)]
        self._sens_move = _Ewma((m, b, n_sensors), 2 * HOUR)
        self._fan_prev = np.full((m, n_fans), np.nan)
        self._vr_prev = np.full(boards, np.nan)
        self.scores: dict[str, Array] = {
            "chip": np.zeros(chips), "board": np.zeros(boards), "vr": np.zeros(boards), "fan": np.zeros((m, n_fans)),
            "psu": np.zeros(miners), "sensor": np.zeros((m, b, n_sensors))}
        self._hist = {k: np.zeros((th.persist, *v.shape)) for k, v in self.scores.items()}
        self._n = 0
        self._detail: dict[str, dict[str, Array]] = {}
        self._lead: dict[str, tuple[Array, Array, float, float]] = {}  # short, mid, failure level, lag
        del fans

    # -- features -----------------------------------------------------------------------------------

    def update(self, snap: Snapshot) -> dict[str, Array]:
        """Feed one snapshot; returns each channel's held score (min over the last ``persist`` samples)."""
        prev, self._prev = self._prev, snap
        if self._t0 is None:
            self._t0 = snap.time_s
        self.time_s = snap.time_s
        if prev is None:
            return self.held()
        dt = snap.time_s - prev.time_s
        if not dt > 0:
            self._prev = prev  # out of order or repeated: ignore
            return self.held()
        th = self.th
        warm = snap.time_s - self._t0 >= th.warmup_s
        self._chip(prev, snap, dt)
        self._board(snap, dt)
        self._vr(snap, dt)
        self._fans(snap, dt)
        self._psu(snap, dt)
        self._sensors(prev, snap, dt)
        for k, v in self.scores.items():
            if not warm:
                v[...] = 0.0
            self._hist[k][self._n % th.persist] = np.nan_to_num(v, nan=0.0)
        self._n += 1
        return self.held()

    def held(self) -> dict[str, Array]:
        if self._n < self.th.persist:
            return {k: np.zeros_like(v) for k, v in self.scores.items()}
        return {k: np.asarray(h.min(axis=0)) for k, h in self._hist.items()}

    def _chip(self, prev: Snapshot, snap: Snapshot, dt: float) -> None:
        th = self.th
        dn = snap.nonces - prev.nonces
        de = snap.errors - prev.errors
        dx = snap.expected - prev.expected
        # Counted: chips on in both readings, finite counters that did not go backwards (a restart says
        # nothing about this interval). Everything else adds zero to the windows.
        with np.errstate(invalid="ignore"):
            use = snap.chip_on & prev.chip_on & (dn >= 0) & (de >= 0) & ((dx >= 0) | ~np.isfinite(dx))
        dn, de = np.where(use, dn, 0.0), np.where(use, de, 0.0)
        dx = np.where(use & np.isfinite(dx), dx, 0.0)
        tix = dn + de
        err_s, tix_s = self._err_s.update(de, dt), self._tix_s.update(tix, dt)
        exp_s, val_s = self._exp_s.update(dx, dt), self._val_s.update(dn, dt)
        err_b, tix_b = self._err_b.update(de, dt), self._tix_b.update(tix, dt)
        p0 = (err_b + 0.1) / (tix_b + 1000.0)  # the chip's own long-run error rate (a weak prior at 1e-4)
        rate = err_s / np.maximum(tix_s, 1.0)
        mid = self._err_m.update(de, dt) / np.maximum(self._tix_m.update(tix, dt), 1.0)
        z_err = (err_s - tix_s * p0) / np.sqrt(tix_s * p0 + 1.0)
        # Missing nonces: valid nonces against what the hashes should have found at the baseline rate.
        want = exp_s * (1 - p0)
        z_def = (want - val_s) / np.sqrt(want + 1.0)
        deficit = 1.0 - val_s / np.maximum(exp_s, 1.0)
        rising = (rate >= th.chip_ratio * p0) & (rate >= th.chip_min_rate)
        z = np.maximum(z_err, np.where(np.isfinite(z_def), z_def, 0.0))
        self.scores["chip"] = np.where(rising & (tix_s > 0), z / th.chip_z, 0.0)
        self._detail["chip"] = {"rate": rate, "p0": p0, "z_err": z_err, "z_def": z_def, "deficit": deficit}
        self._lead["chip"] = (rate, mid, 0.5, th.mid_s - th.short_s)

    def _board(self, snap: Snapshot, dt: float) -> None:
        th = self.th
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            temp = np.nanmedian(np.where(np.isfinite(snap.chip_temps), snap.chip_temps, np.nan), axis=-1) \
                if np.isfinite(snap.chip_temps).any() else np.full(snap.v_set.shape, np.nan)
        resid = _siblings(temp)
        short, mid, base = (e.update(resid, dt) for e in self._tb)
        excess = short - base
        self.scores["board"] = np.where(np.isfinite(excess), excess / th.board_c, 0.0)
        self._detail["board"] = {"excess": excess}
        self._lead["board"] = (excess, mid - base, 15.0, th.mid_s - th.short_s / 6)

    def _vr(self, snap: Snapshot, dt: float) -> None:
        th = self.th
        t_short, t_mid, t_base = (e.update(_siblings(snap.vr_temp), dt) for e in self._vrt)
        heat = t_short - t_base
        own = np.where(snap.v_set > 0, snap.vr_volts / snap.v_set, np.nan)
        # Sag against the sibling boards: the supply-path drop moves every board's reading with its power.
        v_short, _, v_base = (e.update(_siblings(own), dt) for e in self._vrv)
        sag = v_base - v_short
        # Ripple from the board's own successive readings (a sibling's ripple must not show here).
        jump = np.abs(own - self._vr_prev) / math.sqrt(2.0)
        self._vr_prev = own
        rip_s, rip_b = (e.update(jump, dt) for e in self._vr_rip)
        ripple = rip_s - rip_b
        parts = np.stack([heat / th.vr_c, sag / th.vr_sag, ripple / th.vr_ripple])
        self.scores["vr"] = np.nan_to_num(parts, nan=0.0).max(axis=0)
        self._detail["vr"] = {"heat": heat, "sag": sag, "ripple": ripple,
                              "which": np.nan_to_num(parts, nan=-1.0).argmax(axis=0).astype(np.float64)}
        self._lead["vr"] = (heat, t_mid - t_base, 20.0, th.mid_s - th.short_s / 6)

    def _fans(self, snap: Snapshot, dt: float) -> None:
        th = self.th
        rpm = snap.fan_rpm
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (no fan readings) stay NaN
            med = np.nanmedian(np.where(rpm > 0, rpm, np.nan), axis=-1, keepdims=True) \
                if rpm.size and np.isfinite(rpm).any() else np.full((*rpm.shape[:1], 1), np.nan)
            ratio = np.where((rpm > 0) & (med > 0), rpm / med, np.nan)
        short, mid, base = (e.update(ratio, dt) for e in self._fan)
        drop = base - short
        jump = np.abs(ratio - self._fan_prev) / math.sqrt(2.0)
        self._fan_prev = ratio
        jit_s, jit_b = (e.update(jump, dt) for e in self._fan_jit)
        jitter = jit_s - jit_b
        parts = np.stack([drop / th.fan_drop, jitter / th.fan_jitter])
        self.scores["fan"] = np.nan_to_num(parts, nan=0.0).max(axis=0)
        self._detail["fan"] = {"drop": drop, "jitter": jitter,
                               "which": np.nan_to_num(parts, nan=-1.0).argmax(axis=0).astype(np.float64)}
        self._lead["fan"] = (drop, base - mid, 0.4, th.mid_s - th.short_s / 6)

    def _psu(self, snap: Snapshot, dt: float) -> None:
        th = self.th
        eff = np.where(snap.input_w > 0, snap.psu_out_w / snap.input_w, np.nan)
        eff = np.where((eff > 0.3) & (eff < 1.05), eff, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            v_mean = np.nanmean(np.where(np.isfinite(snap.v_set), snap.v_set, np.nan), axis=-1)
            v_ratio = np.where(v_mean > 0, snap.psu_out_v / v_mean, np.nan)
        e_short, e_mid, e_base = (e.update(eff, dt) for e in self._eff)
        v_short, _, v_base = (e.update(v_ratio, dt) for e in self._pv)
        loss = e_base - e_short
        drift = np.abs(v_short - v_base)
        parts = np.stack([loss / th.psu_eff, drift / th.psu_v])
        self.scores["psu"] = np.nan_to_num(parts, nan=0.0).max(axis=0)
        self._detail["psu"] = {"loss": loss, "drift": drift,
                               "which": np.nan_to_num(parts, nan=-1.0).argmax(axis=0).astype(np.float64)}
        self._lead["psu"] = (loss, e_base - e_mid, 0.05, th.mid_s - th.short_s / 2)

    def _sensors(self, prev: Snapshot, snap: Snapshot, dt: float) -> None:
        th = self.th
        if prev.chip_temps.shape != snap.chip_temps.shape:
            return
        move = self._sens_move.update(np.abs(snap.chip_temps - prev.chip_temps), dt)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            others = np.nanmedian(move, axis=-1, keepdims=True) if move.shape[-1] > 1 else np.full_like(move, np.nan)
        stuck = (move < th.sensor_flat_c) & (others > 5 * th.sensor_flat_c)
        self.scores["sensor"] = np.where(stuck, 2.0, 0.0)
        self._detail["sensor"] = {"move": move}

    # -- explanations -------------------------------------------------------------------------------

    def lead_h(self, channel: str, flat: NDArray[np.int64]) -> Array:
        """Estimated hours to failure of the components at flat indices ``flat`` of ``channel`` (NaN: none)."""
        if channel not in self._lead:
            return np.full(len(flat), np.nan)
        short, mid, level, lag = self._lead[channel]
        return _lead_h(short.ravel()[flat], mid.ravel()[flat], level, lag)

    def findings(self, held: dict[str, Array] | None = None, miner: int | None = None) -> list[Finding]:
        """Every component held above its level, worst first, each with its reason and lead time."""
        held = held if held is not None else self.held()
        out: list[Finding] = []
        for channel, score in held.items():
            level = self.th.level.get(channel, 1.0)
            idx = np.argwhere(score >= level)
            if miner is not None:
                idx = idx[idx[:, 0] == miner] if len(idx) else idx
            for where in idx[:200]:
                out.append(self._explain(channel, tuple(int(i) for i in where), float(score[tuple(where)]), level))
        out.sort(key=lambda f: -f.score)
        return out

    def _explain(self, channel: str, at: tuple[int, ...], score: float, level: float) -> Finding:
        th, d = self.th, self._detail.get(channel, {})

        def get(name: str) -> float:
            return float(d[name][at]) if name in d else math.nan

        lead = float(self.lead_h(channel, np.array([np.ravel_multi_index(at, self.scores[channel].shape)]))[0])
        lead_h = lead if math.isfinite(lead) else None
        m = at[0]
        if channel == "chip":
            rate, p0, z_err, z_def = get("rate"), get("p0"), get("z_err"), get("z_def")
            if z_err >= z_def:
                reason = (f"hardware errors {rate:.2%} over the last ~12 h against the chip's own {p0:.3%} "
                          f"baseline ({z_err:.0f} sigma; flagged from {level * th.chip_z:.0f} sigma)")
                feature, value, band = "error_rate_z", z_err, level * th.chip_z
            else:
                reason = (f"valid nonces {get('deficit'):.1%} short of what its hashes should find "
                          f"({z_def:.0f} sigma; flagged from {level * th.chip_z:.0f} sigma)")
                feature, value, band = "nonce_deficit_z", z_def, level * th.chip_z
            return Finding("chip", m, at[1], at[2], feature, value, band, score, lead_h, reason)
        if channel == "board":
            x = get("excess")
            reason = (f"runs {x:.1f} C hotter against its sibling boards than its 10-day baseline "
                      f"(band {level * th.board_c:.1f} C): thermal paste or solder ageing")
            return Finding("board", m, at[1], None, "temp_vs_siblings_c", x, level * th.board_c, score, lead_h, reason)
        if channel in _CAUSES:
            cause = _CAUSES[channel][int(get("which"))]
            x, band = get(cause.detail), level * float(getattr(th, cause.scale))
            board = at[1] if channel == "vr" else None
            index = at[1] if channel == "fan" else None
            return Finding(channel, m, board, index, cause.feature, x, band, score, lead_h,
                           cause.reason.format(x=x, band=band))
        x = get("move")
        reason = (f"chip-temperature sensor flat ({x:.3f} C rms movement) while its neighbours move: stuck "
                  "(a failed sensor, not a precursor)")
        return Finding("sensor", m, at[1], at[2], "sensor_flatline", x, th.sensor_flat_c, score, 0.0, reason)
