"""Stall suspicion: a pool that stops answering (TCP open) loses the work to the hot standby at once, no share lost;
a slow but healthy pool keeps it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from openmos.hw.cpu import CpuHardware, CpuSettings
from openmos.miner import AgentConfig, MiningAgent

from helpers import wait_for
from hostile_pool import HostilePool


def two_pool_agent(primary: HostilePool, backup: HostilePool) -> MiningAgent:
    # Long confirmation timeouts: anything that moves the work within them is the stall suspicion.
    config = AgentConfig.from_dict({
        "hardware": "cpu:1",
        "stratum": {"stall_timeout_s": 60.0, "response_timeout_s": 60.0, "stall_suspect_s": 1.0},
        "groups": [{"pools": [{"url": primary.url, "user": "me.rig"}, {"url": backup.url, "user": "me.rig"}]}]})
    return MiningAgent(config, CpuHardware(CpuSettings(workers=1)))


@contextlib.asynccontextmanager
async def two_pools_and_agent() -> AsyncIterator[tuple[HostilePool, HostilePool, MiningAgent]]:
    """Two scripted pools and a running agent on them (primary first); all stopped on the way out."""
    primary, backup = HostilePool(difficulty="0.00005"), HostilePool(difficulty="0.00005")
    await primary.start()
    await backup.start()
    agent = two_pool_agent(primary, backup)
    await agent.start()
    try:
        yield primary, backup, agent
    finally:
        await agent.stop()
        await primary.stop()
        await backup.stop()


async def test_pool_that_stops_answering_hands_work_to_hot_standby_without_losing_shares() -> None:
    async with two_pools_and_agent() as (primary, backup, agent):
        group = agent.pools.groups[0]
        p = await primary.session()
        await wait_for(lambda: len(p.submits) >= 2, 120, "shares on the primary")
        standby = await backup.session()  # the hot standby: connected and authorised before any trouble
        await wait_for(lambda: group.connections[1].client is not None, 60, "the hot standby")
        assert not standby.submits
        p.mute = True  # the TCP connection stays open; nothing comes back any more
        began = time.monotonic()
        await wait_for(lambda: len(standby.submits) >= 1, 60, "a share sent to the standby")
        took = time.monotonic() - began
        primary_client = group.connections[0].client
        assert primary_client is not None and not primary_client.closed.is_set(), "suspected session was closed"
        assert group.stall_suspicions >= 1 and group.active is group.connections[1]
        assert took < 60.0, "the switch only came with the confirmation timeout"
        muted = len(p.unanswered)
        assert muted >= 1, "no share was waiting on the stalled pool"
        await p.unmute()  # the primary answers again: its shares are answered, none lost
        mine = f":{primary.port}"
        await wait_for(lambda: all(f.result is not None for f in agent.found if f.pool_url.endswith(mine)), 60,
                       "answers for every share sent to the primary")
        await wait_for(lambda: group.active is group.connections[0], 120, "fallback to the answering primary")
    conns = group.connections
    assert sum(c.lost_shares + c.unrecoverable for c in conns) == 0
    for session in (p, standby):  # both scripted pools send the same job: compare within each pool only
        sent = [tuple(s.params[1:]) for s in session.submits]
        assert len(sent) == len(set(sent)), "a share was sent twice to the same pool"
    assert all(f.fate != "lost" for f in agent.found)
    print(f"stall -> first share on the standby {took:.2f} s; {muted} share(s) waited on the stalled pool")


async def test_slow_but_healthy_pool_keeps_the_work() -> None:
    async with two_pools_and_agent() as (primary, backup, agent):
        group = agent.pools.groups[0]
        p = await primary.session()
        p.answer_delay = 0.5
        standby = await backup.session()
        await wait_for(lambda: group.connections[0].counters.accepted >= 8, 180, "slow answers accepted")
    assert group.stall_suspicions == 0 and group.switches == 1
    assert not standby.submits
    assert group.connections[0].answer_s >= 0.4  # the pool's slowness was learnt
