"""Sweeps: every chip's highest clean frequency at one board voltage, learned from its error counter.

All chips climb together along the PLL grid in small relative steps; a chip stops at the last step where
its error fraction stayed clean -- its limit at that voltage. A chip already erring at the start walks down;
one that errs everywhere is dead. ``Sweep`` is the pure per-window update; the tuner drives the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from openmos.hw.interface import HardwareLimits
from openmos.tuning.planning import FloatArray, snap_down, snap_up
from openmos.tuning.state import TunerOptions

BoolArray = NDArray[np.bool_]
MAX_SWEEP_WINDOWS = 80


@dataclass
class Sweep:
    voltage: float
    freq: FloatArray  # what every chip runs at now
    good: FloatArray  # last frequency that ran clean (0: none yet)
    fmax: FloatArray  # found limit (valid where done)
    done: BoolArray

    @classmethod
    def start(cls, limits: HardwareLimits, voltage: float, start: FloatArray, dead: BoolArray) -> Sweep:
        f = np.clip(start, limits.freq_min_mhz, limits.freq_max_mhz)
        f = np.where(dead, 0.0, snap_down(limits, f))
        zeros = np.zeros_like(f)
        return cls(voltage, f, zeros.copy(), zeros.copy(), dead.copy())

    def update(self, err: FloatArray, limits: HardwareLimits, opt: TunerOptions) -> BoolArray:
        """Advance every live chip from one window's error fractions. Returns chips found dead now."""
        live = ~self.done
        clean = live & (err <= opt.err_ok)
        edge = live & (err > opt.err_ok) & (err <= opt.err_bad)
        bad = live & (err > opt.err_bad)
        self.good = np.where(clean | edge, self.freq, self.good)
        self.fmax = np.where(edge, self.freq, self.fmax)
        self.done |= edge
        # Past the limit: settle on the last clean step; a chip never clean walks down instead.
        had_good = bad & (self.good > 0)
        self.fmax = np.where(had_good, self.good, self.fmax)
        self.done |= had_good
        walk_down = bad & (self.good == 0)
        freq = np.where(had_good, self.good, self.freq)
        freq = np.where(walk_down, snap_down(limits, freq * (1 - 3 * opt.sweep_step)), freq)
        gone = walk_down & (freq < limits.freq_min_mhz)
        self.done |= gone
        climbing = clean & ~self.done
        up = snap_up(limits, np.minimum(self.freq * (1 + opt.sweep_step), limits.freq_max_mhz))
        freq = np.where(climbing, up, freq)
        capped = climbing & (self.freq >= limits.freq_max_mhz - 1e-9)
        self.fmax = np.where(capped, self.freq, self.fmax)
        self.done |= capped
        freq = np.clip(freq, limits.freq_min_mhz, limits.freq_max_mhz)
        self.freq = np.where(gone, 0.0, freq)
        return np.asarray(gone, dtype=bool)

    def result(self, dead: BoolArray) -> FloatArray:
        """Limits found; chips still climbing when the sweep stopped keep their last clean step."""
        fmax = np.where(self.done, self.fmax, self.good)
        return np.asarray(np.where(dead, 0.0, fmax))
