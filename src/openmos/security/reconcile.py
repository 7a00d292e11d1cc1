"""Pool-side vs device-side hashrate reconciliation: catches hashrate diverted away from the user's pool.

The device knows how many hashes its chips did (hardware counters, which pool-rewriting malware on the
control board does not change); the pool knows how much work it credited. Shares are Poisson, so both
the deficit and its timing can be tested for significance:

- aggregate: over the whole window, credited work far below expected (beyond a tolerance for stale and
  rejected shares), with a z-score threshold;
- slices: short windows (5 min) in which the pool saw almost nothing although the device hashed at full
  rate; when they recur at the same minute of the hour it is the signature of a time-sliced hidden pool
  (the "N minutes every hour" dev-fee or malware pattern).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import poisson

HASHES_PER_DIFF1 = 2.0**32


@dataclass(frozen=True)
class ReconcileResult:
    alert: bool
    ratio: float  # pool-credited work / device work over the window
    z_score: float  # how many standard deviations below the tolerated ratio
    suspicious_slices: list[int]  # slice indexes (from the start) where the pool saw almost nothing
    periodic: bool  # suspicious slices recur at the same phase of the hour
    reason: str


def reconcile(device_hashes: NDArray[np.float64], pool_shares: NDArray[np.float64], difficulty: float,
              *, bucket_s: float = 60.0, slice_buckets: int = 5, tolerance: float = 0.03,
              z_alert: float = 5.0, slice_p: float = 1e-6) -> ReconcileResult:
    """Compare per-bucket device hashes with per-bucket pool-accepted shares at ``difficulty``."""
    device_hashes = np.asarray(device_hashes, dtype=np.float64)
    pool_shares = np.asarray(pool_shares, dtype=np.float64)
    expected = device_hashes / (difficulty * HASHES_PER_DIFF1)  # shares the pool should have seen
    total_expected, total_seen = float(expected.sum()), float(pool_shares.sum())
    if total_expected < 30:
        return ReconcileResult(False, float("nan"), 0.0, [], False, "not enough work yet to judge")
    ratio = total_seen / total_expected
    floor = (1 - tolerance) * total_expected
    z = (floor - total_seen) / math.sqrt(floor)
    n_slices = len(expected) // slice_buckets
    exp_s = expected[: n_slices * slice_buckets].reshape(n_slices, slice_buckets).sum(axis=1)
    seen_s = pool_shares[: n_slices * slice_buckets].reshape(n_slices, slice_buckets).sum(axis=1)
    # P(seen <= observed | expected at (1 - tolerance)): tiny means this slice's work went elsewhere.
    p = poisson.cdf(seen_s, exp_s * (1 - tolerance))
    suspicious = [int(i) for i in np.flatnonzero((p < slice_p) & (exp_s > 20))]
    slices_per_hour = max(1, round(3600 / (bucket_s * slice_buckets)))
    phases = [i % slices_per_hour for i in suspicious]
    periodic = len(suspicious) >= 3 and max(phases.count(ph) for ph in set(phases)) >= 3
    if periodic:
        reason = (f"pool saw almost nothing in {len(suspicious)} slices that recur at the same minute of the hour "
                  f"(time-sliced diversion); credited/expected work {ratio:.3f}")
    elif z >= z_alert:
        reason = f"pool credited {ratio:.3f} of the device's work ({z:.1f} sigma below {1 - tolerance:.2f})"
    else:
        reason = f"consistent: pool credited {ratio:.3f} of the device's work"
    return ReconcileResult(periodic or z >= z_alert, ratio, z, suspicious, periodic, reason)
