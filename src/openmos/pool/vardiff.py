"""Variable difficulty: keep each connection near a target share interval."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VardiffSettings:
    target_interval: float = 5.0  # seconds between shares we aim for
    retarget_after: float = 15.0  # seconds of history before changing difficulty
    min_difficulty: float = 1e-6
    max_difficulty: float = 1e15
    max_step: float = 4.0  # change by at most this factor per retarget


def next_difficulty(current: float, shares: int, elapsed: float, settings: VardiffSettings) -> float | None:
    """The difficulty to switch to, or None to keep the current one.

    Pure function: ``shares`` found in ``elapsed`` seconds at ``current`` difficulty imply a work rate;
    the new difficulty makes that rate produce one share per ``target_interval``.
    """
    if elapsed < settings.retarget_after:
        return None
    if shares == 0:
        proposed = current / settings.max_step
    else:
        rate = shares * current / elapsed  # difficulty-1 shares per second
        proposed = rate * settings.target_interval
        proposed = min(max(proposed, current / settings.max_step), current * settings.max_step)
    proposed = min(max(proposed, settings.min_difficulty), settings.max_difficulty)
    # Hysteresis: small changes cost a notify round trip and buy nothing.
    if 0.7 < proposed / current < 1.4:
        return None
    return proposed
