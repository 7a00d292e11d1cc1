"""Test helpers shared by several test modules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from openmos.pool import PoolSettings


def easy_pool_settings(**overrides: object) -> PoolSettings:
    """A pool whose shares a CPU finds in a fraction of a second, without vardiff surprises."""
    base: dict[str, object] = {"port": 0, "start_difficulty": 0.0002, "vardiff": None,
                               "network_difficulty": 1000.0, "job_interval": 3600.0}
    base.update(overrides)
    return PoolSettings(**base)  # type: ignore[arg-type]


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
