"""Rolling hashrate from monotonically increasing hash counters."""

from __future__ import annotations

from collections import deque


class HashrateMeter:
    """Keeps (time, total_hashes) samples and reports the rate over a trailing window."""

    def __init__(self, horizon: float = 900.0) -> None:
        self.horizon = horizon
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, total: float) -> None:
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] > self.horizon:
            self._samples.popleft()

    def rate(self, window: float) -> float:
        """Hashes per second over the last ``window`` seconds (or the whole history if shorter)."""
        if len(self._samples) < 2:
            return 0.0
        end_t, end_total = self._samples[-1]
        start_t, start_total = self._samples[0]
        for t, total in reversed(self._samples):
            if end_t - t >= window:
                start_t, start_total = t, total
                break
        elapsed = end_t - start_t
        return (end_total - start_total) / elapsed if elapsed > 0 else 0.0
