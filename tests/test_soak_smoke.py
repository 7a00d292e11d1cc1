"""A short run of benchmarks/soak.py through its own code path, so a change that breaks the soak fails a test.

(A changed ``_on_submit`` signature once made the soak mine 0 shares without anyone noticing.) One simulated
pool kill, one restart, one network stall and a difficulty change every simulated minute, a few seconds real.
"""

from __future__ import annotations

import math
from types import ModuleType

from helpers import load_script


def load_soak() -> ModuleType:
    return load_script("benchmarks/soak.py", "openmos_soak_benchmark")


async def test_short_soak_accepts_shares_loses_none_and_fails_over() -> None:
    soak = load_soak()
    schedule = soak.Schedule(period=1000, kill=1, restart=2, storm=-1, stall=3, hostile=-1)
    outcome = await soak.soak(hours=3.5 / 60, speed=60.0, baseline_share=0.0, seed=3, schedule=schedule,
                              fallback_interval_s=1.0, min_baseline_s=2.0)
    figures = outcome.figures
    assert outcome.accepted > 0, "the soak mined no accepted share"
    assert outcome.lost == 0 and outcome.duplicate_rejects == 0 and outcome.stale_known == 0
    assert figures.difficulty_changes >= 3
    assert len(figures.failovers) == 1 and math.isfinite(figures.failovers[0]), "no failover after the kill"
    assert len(figures.fallbacks) == 1 and math.isfinite(figures.fallbacks[0]), "no fallback to the primary"
    assert len(figures.stall_failovers) == 1 and math.isfinite(figures.stall_failovers[0]), "no stall failover"
    assert all(math.isfinite(t) for t in figures.kill_first_shares + figures.stall_first_shares)
