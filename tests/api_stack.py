"""A running device for API tests: local pool + agent on a simulated S21 + cgminer and REST APIs, all on
127.0.0.1 with free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from openmos.api.service import DeviceApis
from openmos.hw.sim import SimClock
from openmos.hw.sim.backend import SimHardware
from openmos.miner import MiningAgent
from openmos.pool import LocalPool

from helpers import cpu_agent, easy_pool_settings, running, wait_for


@dataclass
class Stack:
    pool: LocalPool
    agent: MiningAgent
    apis: DeviceApis
    hw: SimHardware

    @property
    def cgminer_port(self) -> int:
        return self.apis.cgminer.port

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.apis.rest_port}"


@asynccontextmanager
async def running_device(allow: list[str] | None = None, performance: dict[str, Any] | None = None,
                         auth_file: str | None = None, cgminer_host: str = "127.0.0.1",
                         cgminer_port: int = 0) -> AsyncIterator[Stack]:
    pool = LocalPool(easy_pool_settings(start_difficulty=0.0001))
    hw = SimHardware("s21", seed=21, clock=SimClock(speed=30.0), tick_s=0.1)
    async with running(pool):
        agent = cpu_agent(pool.url, user="api.s21", hardware=hw, sections={
            "performance": performance or {},
            "api": {"cgminer_host": cgminer_host, "cgminer_port": cgminer_port, "rest_port": 0,
                    "cgminer_allow": allow or [], "auth_file": auth_file}})
        apis = DeviceApis(agent)
        async with running(agent, apis):
            await wait_for(lambda: agent.pools.groups[0].active is not None, 10, "pool connection")
            await wait_for(lambda: agent.hashrate.rate(60) > 0, 10, "hashrate samples")
            yield Stack(pool, agent, apis, hw)
