"""Test helpers shared by several test modules."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from openmos.hw.cpu import CpuHardware, CpuSettings
from openmos.hw.interface import MiningHardware
from openmos.miner import AgentConfig, MiningAgent
from openmos.pool import LocalPool, PoolSettings
from openmos.pool.sv2 import Sv2PoolServer, generate_authority_key

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


# Quick reconnects for tests that drop pools on purpose: a retry after 0.2 s, a fallback check every 0.5 s.
QUICK_RETRY: dict[str, Any] = {"retry_delay_s": 0.2, "fallback_interval_s": 0.5}


class Service(Protocol):
    """Anything a test starts and stops: pools, V2 front ends, proxies, agents, API servers."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def agent_config(*urls: str, user: str = "me.rig", pool_options: dict[str, Any] | None = None,
                 sections: dict[str, Any] | None = None, **stratum: Any) -> AgentConfig:
    """One failover group on ``urls`` (in that order), every pool with worker ``user`` (and ``pool_options``);
    ``stratum`` settings; ``sections``: other parts of the config (``performance``, ``api``, ...).

    The agent asks for no difficulty unless ``suggest_difficulty`` is given: the pool's start difficulty (a share
    in a fraction of a second, see ``easy_pool_settings``) rules, not the default suggestion of a share every ~5 s
    that the pools honour -- which made every share-counting test wait seconds per share."""
    stratum.setdefault("suggest_difficulty", 0)
    pools = [{"url": u, "user": user, **(pool_options or {})} for u in urls]
    return AgentConfig.from_dict({"hardware": "cpu:1", "stratum": stratum, **(sections or {}),
                                  "groups": [{"name": "main", "pools": pools}]})


def cpu_agent(*urls: str, user: str = "me.rig", hardware: MiningHardware | None = None,
              pool_options: dict[str, Any] | None = None, sections: dict[str, Any] | None = None,
              **stratum: Any) -> MiningAgent:
    """An agent (not started) mining real SHA-256d on ``urls`` with one CPU worker (or ``hardware``); the
    arguments as for ``agent_config``."""
    return MiningAgent(agent_config(*urls, user=user, pool_options=pool_options, sections=sections, **stratum),
                       hardware or CpuHardware(CpuSettings(workers=1, chunk_seconds=0.2)))


@contextlib.asynccontextmanager
async def running(*services: Service) -> AsyncIterator[None]:
    """Start ``services`` in order (pools before the agents mining on them); stop those started, in reverse."""
    started: list[Service] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        yield
    finally:
        for service in reversed(started):
            await service.stop()


@contextlib.asynccontextmanager
async def v2_pool(difficulty: float) -> AsyncIterator[tuple[LocalPool, Sv2PoolServer]]:
    """A local pool at start ``difficulty`` and its Stratum V2 front end (a fresh authority key), both running."""
    pool = LocalPool(easy_pool_settings(start_difficulty=difficulty))
    v2 = Sv2PoolServer(pool, generate_authority_key()[0])
    async with running(pool, v2):
        yield pool, v2
