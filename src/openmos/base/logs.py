"""Rate-limited logging: a hostile peer must not be able to turn the agent's log into a flood.

``LogLimiter`` lets through up to ``burst`` lines per key and then one line per ``interval`` seconds,
telling the reader how many similar lines it held back in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LogLimiter:
    logger: logging.Logger
    interval: float = 10.0
    burst: int = 5
    clock: Callable[[], float] = time.monotonic
    _state: dict[str, tuple[float, int, int]] = field(default_factory=dict, init=False, repr=False)

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` is over its budget; True when the line was written."""
        now = self.clock()
        window_start, sent, held = self._state.get(key, (now, 0, 0))
        if now - window_start >= self.interval:
            window_start, sent = now, 0
        if sent >= self.burst:
            self._state[key] = (window_start, sent, held + 1)
            return False
        if len(self._state) > 256 and key not in self._state:  # keys come from code, but stay bounded anyway
            self._state.clear()
        suffix = f" ({held} similar lines suppressed)" if held else ""
        self.logger.log(level, msg + suffix, *args)
        self._state[key] = (window_start, sent + 1, 0)
        return True
