"""Patience with a slow host, shared by every request/answer exchange with hardware (chip register reads on a
BM13xx chain, the bitaxe-raw control port): a request left unanswered is asked again, each wait twice the
last, and a device counts as failing only after several unanswered requests in a row -- a starved host reads
its serial port late, which is not a dead chip or a broken sensor.
"""

from __future__ import annotations

from dataclasses import dataclass


def retry_waits(timeout_s: float, retries: int) -> list[float]:
    """How long to wait for each attempt: ``timeout_s``, then doubled for each of ``retries`` repeats."""
    return [timeout_s * 2.0 ** attempt for attempt in range(max(0, retries) + 1)]


@dataclass
class MissStreak:
    """Unanswered requests in a row; :meth:`miss` says when the streak reaches ``limit`` (report it once)."""

    limit: int = 3
    in_a_row: int = 0
    total: int = 0  # every miss, also those forgiven by an answer before the limit

    def miss(self) -> bool:
        self.in_a_row += 1
        self.total += 1
        return self.in_a_row == max(1, self.limit)

    def hit(self) -> bool:
        """An answer: the streak ends; True when it had reached the limit (a recovery worth saying)."""
        failing, self.in_a_row = self.failing, 0
        return failing

    @property
    def failing(self) -> bool:
        return self.in_a_row >= max(1, self.limit)
