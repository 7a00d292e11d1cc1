"""Base utilities every layer may import: clocks, atomic file writes, allow lists, the asyncio stream server
lifecycle (``openmos.base.server``), PEM keys and certificates (``openmos.base.pem``), pool URLs and endpoints
in one normalised spelling (``openmos.base.url``). Imports nothing above."""

from openmos.base.clock import Clock, WallClock
from openmos.base.files import atomic_write
from openmos.base.net import AllowList, free_local_port

__all__ = ["AllowList", "Clock", "WallClock", "atomic_write", "free_local_port"]
