"""Agent behaviour with scripted hardware: nonce re-validation, HW errors, quota split, no fee pool."""

from __future__ import annotations

import asyncio

from openmos.bitcoin import BlockHeader
from openmos.hw import HardwareTelemetry, MiningHardware, NonceResult, NonceSink, WorkProvider
from openmos.hw.interface import BoardTelemetry, ChipTelemetry
from openmos.miner import AgentConfig, MiningAgent
from openmos.miner.config import StratumTuning
from openmos.miner.pool_manager import PoolManager
from openmos.pool import LocalPool

from helpers import easy_pool_settings, wait_for


class LyingHardware(MiningHardware):
    """Finds real nonces, but also reports garbage ones from chip 1 and wrong version bits from chip 2."""

    model = "test-lying"

    def __init__(self) -> None:
        self.errors: list[tuple[int, int]] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self, provider: WorkProvider, sink: NonceSink) -> None:
        self.task = asyncio.create_task(self._run(provider, sink))

    async def _run(self, provider: WorkProvider, sink: NonceSink) -> None:
        while True:
            work = provider.next_work()
            if work is None:
                await asyncio.sleep(0.02)
                continue
            header = work.header
            mid = BlockHeader(header.version, header.prev_hash, header.merkle_root, header.ntime, header.bits, 0)
            midstate, tail = mid.midstate(), mid.tail12()
            for start in range(0, 200_000, 5_000):  # in slices, so the event loop keeps answering the pools
                hit = next(iter(midstate.scan(tail, range(start, start + 5_000), work.target)), None)
                if hit is not None:
                    nonce = hit[0]
                    sink(NonceResult(work.work_id, nonce, header.version, 0, 0))
                    sink(NonceResult(work.work_id, (nonce + 1) & 0xFFFFFFFF, header.version, 0, 1))
                    sink(NonceResult(work.work_id, nonce, header.version ^ 0x80000000, 0, 2))
                    sink(NonceResult(10**9, nonce, header.version, 0, 3))  # unknown work id
                    break
                await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()

    def telemetry(self) -> HardwareTelemetry:
        return HardwareTelemetry(self.model, [BoardTelemetry(0, [ChipTelemetry(i, None) for i in range(4)])])

    def record_error(self, board: int, chip: int) -> None:
        self.errors.append((board, chip))


def config(*groups: tuple[str, int, str]) -> AgentConfig:
    return AgentConfig.from_dict({"groups": [
        {"name": name, "quota": quota, "pools": [{"url": url, "user": f"{name}.w"}]} for name, quota, url in groups
    ]})


def test_a_group_that_could_not_mine_earns_no_quota_credit() -> None:
    cfg = config(("big", 3, "stratum+tcp://127.0.0.1:1"), ("small", 1, "stratum+tcp://127.0.0.1:2"))
    manager = PoolManager(cfg.groups, StratumTuning(), "t", lambda *a: None, lambda g: None)
    up = {"small"}
    picks = [manager.pick_group(lambda g: g.name in up) for _ in range(100)]  # big's pool is down
    assert all(g is not None and g.name == "small" for g in picks)
    up.add("big")
    names = [g.name for g in (manager.pick_group(lambda g: g.name in up) for _ in range(40)) if g is not None]
    assert names.count("big") == 30 and names.count("small") == 10, names  # 3:1 at once, no catch-up burst


async def test_invalid_nonces_are_hardware_errors_never_submitted() -> None:
    pool = LocalPool(easy_pool_settings(start_difficulty=0.00002))
    await pool.start()
    hw = LyingHardware()
    agent = MiningAgent(config(("main", 1, pool.url)), hw)
    await agent.start()
    try:
        await wait_for(lambda: agent.stats.shares_found >= 5, 60, "shares")
        await asyncio.sleep(0.2)
    finally:
        await agent.stop()
        await pool.stop()
    assert agent.stats.hardware_errors >= 10
    assert {chip for _, chip in hw.errors} == {1, 2}  # charged to the chips that lied
    assert agent.stats.expired_nonces >= 5
    assert pool.rejections == {}, "nothing invalid reached the pool"
    assert pool.workers["main.w"].accepted >= 5


async def test_quota_split_between_groups() -> None:
    # 80 work items are counted: a nonce found in ~20,000 hashes each, in this process, keeps that short.
    a = LocalPool(easy_pool_settings(start_difficulty=0.000005))
    b = LocalPool(easy_pool_settings(start_difficulty=0.000005))
    await a.start()
    await b.start()
    agent = MiningAgent(config(("big", 3, a.url), ("small", 1, b.url)), LyingHardware())
    await agent.start()
    big, small = agent.pools.groups
    try:
        # Measured from when both groups have work: one pool answering first (a loaded machine) must not count.
        await wait_for(lambda: big.work_issued and small.work_issued, 60, "work from both groups")
        base_big, base_small = big.work_issued, small.work_issued
        await wait_for(lambda: big.work_issued + small.work_issued - base_big - base_small >= 80, 60,
                       "work split between both groups")
    finally:
        await agent.stop()
        await a.stop()
        await b.stop()
    ratio = (big.work_issued - base_big) / max(small.work_issued - base_small, 1)
    assert 2.5 < ratio < 3.5, ratio
    assert a.workers["big.w"].accepted > b.workers["small.w"].accepted > 0
