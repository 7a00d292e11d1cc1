"""Shared fixtures: everything runs on 127.0.0.1 and is stopped at the end of each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openmos.pool import LocalPool, PoolSettings, VardiffSettings


def easy_pool_settings(**overrides: object) -> PoolSettings:
    """A pool whose shares a CPU finds in a fraction of a second, without vardiff surprises."""
    base: dict[str, object] = {"port": 0, "start_difficulty": 0.0002, "vardiff": None,
                               "network_difficulty": 1000.0, "job_interval": 3600.0}
    base.update(overrides)
    return PoolSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
async def pool() -> AsyncIterator[LocalPool]:
    p = LocalPool(easy_pool_settings())
    await p.start()
    yield p
    await p.stop()


__all__ = ["VardiffSettings", "easy_pool_settings"]
