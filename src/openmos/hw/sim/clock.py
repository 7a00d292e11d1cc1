"""Simulated time: a clock that runs ``speed`` times faster than the wall clock, or is stepped by hand.

It satisfies ``openmos.base.Clock``, so every control loop can run on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class SimClock:
    """``now()`` in simulated seconds. ``speed=0`` makes a manual clock that only ``advance()`` moves."""

    def __init__(self, speed: float = 1.0, start: float = 0.0) -> None:
        if speed < 0:
            raise ValueError("clock speed must be >= 0")
        self.speed = speed
        self._offset = start
        self._wall0 = time.monotonic()
        self._listeners: list[Callable[[], None]] = []

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever a manual clock moves (a simulator steps its physics there)."""
        self._listeners.append(listener)

    def now(self) -> float:
        return self._offset + (time.monotonic() - self._wall0) * self.speed

    def advance(self, seconds: float) -> None:
        self._offset += seconds
        for listener in self._listeners:
            listener()

    async def sleep(self, sim_seconds: float) -> None:
        """Sleep for a span of simulated time (instantly for a manual clock)."""
        if self.speed > 0:
            await asyncio.sleep(sim_seconds / self.speed)
        else:
            self.advance(sim_seconds)
            await asyncio.sleep(0)
