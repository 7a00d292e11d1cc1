"""Share-rate governor: no pool value can make the agent flood its pool (or itself).

Two layers. The *floor* raises the difficulty the hardware mines at so the expected share rate stays at or
below ``max_share_rate`` -- a share that meets a harder target is still valid at the pool's easier one, so
nothing is lost but pointless submits. The *bucket* is a hard limit on submits per second (burst allowed)
for whatever luck or a lying backend produces on top; shares over it are dropped and counted
(``openmos.base.ratelimit.TokenBucket``, built by the pool manager).
"""

from __future__ import annotations

import math

from openmos.stratum.difficulty import difficulty_for_interval


def governed_difficulty(pool_difficulty: float, hashrate_hps: float | None, max_share_rate: float) -> float:
    """The difficulty to mine at: the pool's, raised so the expected rate stays <= ``max_share_rate``/s."""
    if hashrate_hps is None or not math.isfinite(hashrate_hps) or hashrate_hps <= 0 or max_share_rate <= 0:
        return pool_difficulty
    return max(pool_difficulty, difficulty_for_interval(hashrate_hps, 1.0 / max_share_rate))


