"""A calibrated wall meter as the reference for the unit's own input-power reading.

A PSU's PMBus READ_PIN carries a per-unit gain and offset error (often rated +-1-2 %), and no tuner can see
it from the inside: holding the reading on target leaves true power off by the meter's own error. Where the
site meters the unit's circuit (a metering PDU outlet, a revenue-grade meter), the tuner reads it alongside
its own reading in every steady window and fits ``reference = gain x own + offset`` over recent windows
(gain and offset once the windows span enough power, gain alone before). The closed loop then controls on
the corrected own reading: fast (every tick) and as accurate as the reference.

Every reference reading is hostile until checked: NaN, infinities, negatives and readings more than a factor
two from the unit's own are dropped; a fit outside a plausible gain range falls back to the ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

PAIRS_KEPT = 40  # recent windows (ageing and PSU temperature drift the error slowly)
MIN_SPREAD = 0.05  # own readings spanning this share fit an offset too
GAIN_RANGE = (0.9, 1.1)  # a fitted gain outside this is noise, not a meter


class PowerReference(Protocol):
    """Anything that reads this unit's wall power (``energy.modbus.ModbusPowerMeter`` does)."""

    async def read_power_w(self) -> float: ...


@dataclass
class ReadingCorrection:
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (own reading, reference) per window
    gain: float = 1.0
    offset: float = 0.0

    @property
    def calibrated(self) -> bool:
        return bool(self.pairs)

    def add(self, own_w: float, reference_w: float) -> bool:
        """One steady window's mean readings; False when the pair was refused as implausible."""
        if not (np.isfinite(own_w) and np.isfinite(reference_w)) or own_w <= 0 or reference_w <= 0:
            return False
        if not 0.5 <= reference_w / own_w <= 2.0:
            return False
        self.pairs = [*self.pairs[-(PAIRS_KEPT - 1):], (float(own_w), float(reference_w))]
        self._fit()
        return True

    def _fit(self) -> None:
        own = np.array([p[0] for p in self.pairs])
        ref = np.array([p[1] for p in self.pairs])
        ratio = float(ref.sum() / own.sum())
        self.gain, self.offset = ratio, 0.0
        if len(own) >= 4 and (own.max() - own.min()) / own.mean() >= MIN_SPREAD:
            gain, offset = np.polyfit(own, ref, 1)
            if GAIN_RANGE[0] <= gain <= GAIN_RANGE[1] and abs(offset) <= 0.05 * own.mean():
                self.gain, self.offset = float(gain), float(offset)

    def __call__(self, own_w: float) -> float:
        """The own reading corrected onto the reference (unchanged before any reference reading)."""
        return self.gain * own_w + self.offset if own_w > 0 else own_w
