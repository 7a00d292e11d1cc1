"""Base utilities every layer may import: clocks and atomic file writes. Imports nothing from openmos."""

from openmos.base.clock import Clock, WallClock
from openmos.base.files import atomic_write

__all__ = ["Clock", "WallClock", "atomic_write"]
