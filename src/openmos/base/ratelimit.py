"""One token bucket for every rate limit in the project (share submits, MQTT commands, fleet enrollment
and telemetry): ``rate`` tokens a second refill up to ``burst``; each event takes one or is refused.

The clock is injected (``time.monotonic`` by default) and values are checked at construction, so a
configuration or a peer can never make a bucket that refills at NaN, backwards or without bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second up to ``burst`` (starts full); :meth:`take` says whether one is there."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"token bucket rate must be a finite number > 0 per second, not {rate!r}")
        if not (isinstance(burst, int | float) and math.isfinite(burst) and burst >= 1):
            raise ValueError(f"token bucket burst must be a finite number >= 1, not {burst!r}")
        self.rate, self.burst = float(rate), float(burst)
        self.clock = clock
        self.tokens = self.burst
        self.refused = 0  # events refused so far
        self._at: float | None = None  # time of the last take; the bucket is full until the first

    def take(self, now: float | None = None) -> bool:
        """Take one token at ``now`` (the injected clock when None); False (and counted) when none is left.
        A clock that steps backwards refills nothing rather than draining the bucket."""
        now = self.clock() if now is None else now
        if self._at is not None and now > self._at:
            self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        if self._at is None or now > self._at:
            self._at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.refused += 1
        return False
