"""Sweeps: every chip's highest clean frequency at one board voltage, learned from its error counter.

Each chip brackets its limit on the PLL grid, all chips in parallel (one window of counters per step):
- climbing while clean, first by twice the sweep step, each further step 1.5x the last (the start is an
  estimate, often several % off);
- walking down while it errs and has never run clean, first by three sweep steps, each further step 1.5x the
  last (a start far off the limits -- a hot die, a chip near its threshold voltage -- costs a few windows,
  not one per sweep step);
- once it has run clean below a frequency where it erred, halving the bracket (geometric midpoint) until
  the two are within the sweep step: its limit is the clean end.
A chip erring only a little (between ``err_ok`` and ``err_bad``) is at its limit there. One that errs
everywhere is dead. ``Sweep`` is the pure per-window update; the tuner drives the hardware.
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
FIRST_UP_STEPS = 2.0  # a clean chip with nothing erring above it first climbs this many sweep steps
FIRST_DOWN_STEPS = 3.0  # a chip erring with nothing clean below it first walks down this many sweep steps
GROWTH = 1.5  # each further move the same way is this much longer
MAX_MOVE = 0.3  # never move more than this share in one window


@dataclass
class Sweep:
    voltage: float
    freq: FloatArray  # what every chip runs at now
    good: FloatArray  # highest frequency that ran clean (0: none yet)
    fmax: FloatArray  # found limit (valid where done)
    done: BoolArray
    bad: FloatArray  # lowest frequency that erred past ``err_bad`` (inf: none yet)
    down: FloatArray  # share the next walk down takes
    up: FloatArray  # share the next climb takes

    @classmethod
    def start(cls, limits: HardwareLimits, voltage: float, start: FloatArray, dead: BoolArray,
              opt: TunerOptions | None = None) -> Sweep:
        f = np.clip(start, limits.freq_min_mhz, limits.freq_max_mhz)
        f = np.where(dead, 0.0, snap_down(limits, f))
        zeros = np.zeros_like(f)
        step = (opt or TunerOptions()).sweep_step
        return cls(voltage, f, zeros.copy(), zeros.copy(), dead.copy(), np.full_like(f, np.inf),
                   np.full_like(f, FIRST_DOWN_STEPS * step), np.full_like(f, FIRST_UP_STEPS * step))

    def update(self, err: FloatArray, limits: HardwareLimits, opt: TunerOptions) -> BoolArray:
        """Advance every live chip from one window's error fractions. Returns chips found dead now."""
        live = ~self.done
        clean = live & (err <= opt.err_ok)
        edge = live & (err > opt.err_ok) & (err <= opt.err_bad)
        bad = live & (err > opt.err_bad)
        self.good = np.where(clean | edge, np.maximum(self.good, self.freq), self.good)
        self.fmax = np.where(edge, self.freq, self.fmax)
        self.done |= edge
        self.bad = np.where(bad, np.minimum(self.bad, self.freq), self.bad)
        live = ~self.done
        freq = self.freq.copy()
        # Bracketed (clean below, erring above): halve the bracket, or stop at the clean end once it is narrow.
        bracketed = live & (self.good > 0) & np.isfinite(self.bad)
        mid = snap_down(limits, np.sqrt(self.good * np.where(bracketed, self.bad, self.good)))
        narrow = bracketed & ((self.bad <= self.good * (1 + opt.sweep_step) + 1e-9) | (mid <= self.good + 1e-9))
        self.fmax = np.where(narrow, self.good, self.fmax)
        self.done |= narrow
        freq = np.where(bracketed & ~narrow, mid, freq)
        # Erring with nothing clean below: walk down, further each time.
        walk_down = live & (self.good == 0) & np.isfinite(self.bad)
        lower = snap_down(limits, self.bad * (1 - np.minimum(self.down, MAX_MOVE)))
        freq = np.where(walk_down, lower, freq)
        self.down = np.where(walk_down, self.down * GROWTH, self.down)
        gone = walk_down & (lower < limits.freq_min_mhz)
        self.done |= gone
        # Clean with nothing erring above: climb; a chip clean at the top of the range is done there.
        climbing = live & ~np.isfinite(self.bad) & ~self.done
        capped = climbing & (self.freq >= limits.freq_max_mhz - 1e-9)
        self.fmax = np.where(capped, self.freq, self.fmax)
        self.done |= capped
        up = snap_up(limits, np.minimum(self.freq * (1 + np.minimum(self.up, MAX_MOVE)), limits.freq_max_mhz))
        freq = np.where(climbing & ~capped, up, freq)
        self.up = np.where(climbing, self.up * GROWTH, self.up)
        freq = np.clip(freq, limits.freq_min_mhz, limits.freq_max_mhz)
        # Chips done run at their limit (their errors no longer matter; their heat and power still do).
        freq = np.where(self.done & ~gone, np.where(self.fmax > 0, self.fmax, freq), freq)
        self.freq = np.where(gone, 0.0, freq)
        return np.asarray(gone, dtype=bool)

    def result(self, dead: BoolArray) -> FloatArray:
        """Limits found; chips still searching when the sweep stopped keep their last clean step."""
        fmax = np.where(self.done, self.fmax, self.good)
        return np.asarray(np.where(dead, 0.0, fmax))
