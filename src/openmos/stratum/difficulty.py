"""Checks on pool-sent difficulties, and the share-rate arithmetic that derives sane values from a hashrate.

A pool difficulty arrives as a JSON number, which may be ``1e400`` (parsed as infinity), ``NaN``, ``0``,
negative or absurdly small. Every difficulty goes through :func:`check_difficulty` before the agent uses
it; anything outside the range is refused with a message that says why, never turned into a target.
Pure functions only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from openmos.bitcoin.target import DIFF1_TARGET, MAX_TARGET

HASHES_PER_DIFF1 = 2.0**32  # expected hashes per difficulty-1 share
# Below this every hash would be a share (the target would exceed 2^256 - 1).
ABS_MIN_DIFFICULTY = DIFF1_TARGET / MAX_TARGET
# Far above any network difficulty Bitcoin will reach for decades (it is ~1e14 in 2025).
ABS_MAX_DIFFICULTY = 1e18
# A pool value that would make the hardware find more shares per second than this is nonsense.
MAX_SANE_SHARES_PER_S = 1000.0
# Refused when the pool's value means this many times the governor's share rate: far beyond any vardiff
# start value, so only a broken or hostile pool sends it.
GOVERNOR_REFUSE_FACTOR = 200.0
SLOW_SHARE_HOURS = 24.0  # a value meaning one share per more than this: accepted, but warned about and counted


@dataclass(frozen=True)
class DifficultyRange:
    """The difficulties a session accepts from its pool, derived from the hardware's expected hashrate.

    ``[low, high]`` is accepted; outside it the value is refused (counted, the previous one kept). Inside it,
    a value below ``governed_below`` means more shares per second than the share-rate governor allows: it is
    used (the pool credits shares at its own value, so the agent must too) while the hardware mines at the
    governor's floor -- counted. A value above ``slow_above`` means one share per more than
    ``slow_hours``: used (a pool may mean it), warned about and counted.
    """

    low: float = ABS_MIN_DIFFICULTY
    high: float = ABS_MAX_DIFFICULTY
    governed_below: float = 0.0
    slow_above: float = math.inf
    slow_hours: float = SLOW_SHARE_HOURS  # the share interval slow_above stands for

    @classmethod
    def for_hashrate(cls, hashrate_hps: float | None, max_share_rate: float | None = None,
                     slow_hours: float = SLOW_SHARE_HOURS) -> DifficultyRange:
        """The range for hardware of this speed; ``max_share_rate`` is the governor's (shares/s)."""
        if hashrate_hps is None or not math.isfinite(hashrate_hps) or hashrate_hps <= 0:
            return cls()
        refuse_rate = MAX_SANE_SHARES_PER_S
        governed = 0.0
        if max_share_rate is not None and math.isfinite(max_share_rate) and max_share_rate > 0:
            refuse_rate = GOVERNOR_REFUSE_FACTOR * max_share_rate
            governed = difficulty_for_interval(hashrate_hps, 1.0 / max_share_rate)
        # Difficulty 1, the Stratum default every pool may start with, is never refused.
        low = max(ABS_MIN_DIFFICULTY, min(difficulty_for_interval(hashrate_hps, 1.0 / refuse_rate), 1.0))
        slow = difficulty_for_interval(hashrate_hps, slow_hours * 3600.0)
        return cls(low, ABS_MAX_DIFFICULTY, governed, min(slow, ABS_MAX_DIFFICULTY), slow_hours)


class BadDifficulty(ValueError):
    """A pool difficulty that must not be used; the message says why."""


def check_difficulty(value: object, allowed: DifficultyRange) -> float:
    """The value as a float if it is a usable difficulty, else :class:`BadDifficulty`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadDifficulty(f"difficulty must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # a huge JSON integer
        raise BadDifficulty("difficulty is too large to represent") from None
    if not math.isfinite(number):
        raise BadDifficulty(f"difficulty {number!r} is not finite")
    if number <= 0:
        raise BadDifficulty(f"difficulty must be positive, got {number:g}")
    if number < allowed.low:
        raise BadDifficulty(f"difficulty {number:g} is below the sane minimum {allowed.low:.3g} for this "
                            "hardware (it would flood the pool with shares)")
    if number > allowed.high:
        raise BadDifficulty(f"difficulty {number:g} is above the sane maximum {allowed.high:.3g}")
    return number


def difficulty_for_interval(hashrate_hps: float, seconds_per_share: float) -> float:
    """The pool difficulty at which hardware of this speed expects one share every ``seconds_per_share``."""
    return hashrate_hps * seconds_per_share / HASHES_PER_DIFF1


def seconds_per_share(hashrate_hps: float, difficulty: float) -> float:
    """Expected time between shares at this difficulty (inf for a stopped device)."""
    return difficulty * HASHES_PER_DIFF1 / hashrate_hps if hashrate_hps > 0 else math.inf


def suggested_difficulty(hashrate_hps: float, seconds: float = 5.0) -> float:
    """A start difficulty to ask the pool for: one share every few seconds, rounded to 3 significant digits."""
    raw = max(difficulty_for_interval(hashrate_hps, seconds), ABS_MIN_DIFFICULTY)
    return float(f"{raw:.3g}")
