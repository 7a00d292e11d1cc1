"""The baseline: the plain threshold rules fleet tools alert on today (a board's hardware-error share, its
hottest chip sensor, its hashrate against nominal, a fan below a fixed RPM), checked on each sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from openmos.maintenance.snapshot import Snapshot


@dataclass(frozen=True)
class ThresholdRule:
    hw_error_share: float = 0.01  # board hardware errors / nonces over the last sample interval
    chip_temp_c: float = 85.0  # hottest chip sensor of a board
    hashrate_share: float = 0.90  # board valid nonces / what its hashes should find
    fan_min_rpm: float = 3000.0  # about 60 % of a stock S21 fan's 5,100 rpm


class ThresholdAlerts:
    """Stateless but for the previous sample (counters are cumulative). Each rule's value is returned over
    its threshold (>= 1: alert), so a benchmark can calibrate the rule's thresholds as it does the model's."""

    def __init__(self, rule: ThresholdRule | None = None) -> None:
        self.rule = rule or ThresholdRule()
        self._prev: Snapshot | None = None

    def update(self, snap: Snapshot) -> dict[str, NDArray[np.float64]]:
        prev, self._prev = self._prev, snap
        boards = np.zeros(snap.v_set.shape)
        r = self.rule
        with np.errstate(all="ignore"):
            if prev is not None:
                on = snap.chip_on & prev.chip_on
                dn = np.where(on, snap.nonces - prev.nonces, 0.0).sum(axis=-1)
                de = np.where(on, snap.errors - prev.errors, 0.0).sum(axis=-1)
                dx = np.where(on, snap.expected - prev.expected, 0.0).sum(axis=-1)
                boards = np.maximum(boards, (de / np.maximum(dn + de, 1.0)) / r.hw_error_share)
                short = np.where(dx > 0, 1.0 - dn / np.maximum(dx, 1.0), 0.0)
                boards = np.maximum(boards, short / (1.0 - r.hashrate_share))
            hottest = np.where(np.isfinite(snap.chip_temps), snap.chip_temps, -np.inf).max(axis=-1)
            boards = np.maximum(boards, np.where(np.isfinite(hottest), hottest / r.chip_temp_c, 0.0))
            rpm = snap.fan_rpm
            fans = np.where(np.isfinite(rpm), r.fan_min_rpm / np.maximum(rpm, r.fan_min_rpm / 100.0), 0.0)
        return {"board": np.asarray(boards), "fan": np.asarray(fans)}
