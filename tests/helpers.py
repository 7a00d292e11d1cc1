"""Test helpers shared by several test modules."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from openmos.pool import PoolSettings

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str, name: str) -> ModuleType:
    """A script of the repository that is not a package module (``benchmarks/soak.py``, ``scripts/...``),
    imported from its path so tests run its own code."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


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
