"""Shares across dropped connections: resumed sessions get their queued shares, nothing is mined twice,
and shares for a session the pool lost are counted as unrecoverable, never silently dropped."""

from __future__ import annotations

import time

from openmos.miner import MiningAgent
from openmos.miner.pool_manager import PendingShare
from openmos.pool import LocalPool
from openmos.stratum.job import Share

from helpers import QUICK_RETRY, cpu_agent, easy_pool_settings, wait_for

NO_SHARES = 1000.0  # a pool difficulty at which a CPU finds no share during a test


def agent_for(url: str) -> MiningAgent:
    return cpu_agent(url, user="resume.cpu", **QUICK_RETRY)


async def test_drops_resume_the_session_and_never_mine_a_share_twice() -> None:
    pool = LocalPool(easy_pool_settings(start_difficulty=0.00002))  # 12+ shares: a few a second on one CPU
    await pool.start()
    agent = agent_for(pool.url)
    conn = agent.pools.groups[0].connections[0]
    await agent.start()
    try:
        for drop in range(3):
            await wait_for(lambda n=drop: len(pool.accepted) >= 3 * (n + 1), 120, f"shares before drop {drop}")
            await pool.stop()  # every connection dropped; the pool's state survives
            await pool.start()
            await wait_for(lambda n=drop: conn.resumed_sessions == n + 1, 60, f"session resumed after drop {drop}")
        await wait_for(lambda: len(pool.accepted) >= 12, 120, "shares after the drops")
    finally:
        await agent.stop()
        await pool.stop()
    assert "duplicate share" not in pool.rejections, "the same header was mined again after a resume"
    # A share the pool accepted just as it dropped the connection is unanswered for the agent, so it is sent
    # again on the resumed session (nothing may be lost); the pool acknowledges it without crediting it twice.
    assert pool.replayed_shares <= conn.resubmitted, "the pool saw a share again that the agent never re-sent"
    assert conn.resent_duplicates == 0
    assert len({(s.extranonce2, s.nonce, s.ntime, s.version) for s in pool.accepted}) == len(pool.accepted)
    assert len({s.extranonce1 for s in pool.accepted}) == 1
    assert conn.unrecoverable == 0 and conn.lost_shares == 0


async def test_shares_of_a_session_the_pool_lost_are_counted_unrecoverable() -> None:
    # No real share is found at this difficulty: the queued share below is the only one in the outbox.
    pool = LocalPool(easy_pool_settings(start_difficulty=NO_SHARES, network_difficulty=1e6, resume_window=0.0))
    await pool.start()
    agent = agent_for(pool.url)
    conn = agent.pools.groups[0].connections[0]
    await agent.start()
    try:
        await wait_for(lambda: conn.alive and conn.client is not None and conn.client.last_job is not None, 60,
                       "mining")
        assert conn.client is not None and conn.client.last_job is not None
        old_en1, tip = conn.client.extranonce1, conn.client.last_job.prev_hash
        job_id = conn.client.last_job.job_id
        share = Share(job_id, b"\0\0\0\1", 0, 1, 0x20000000, 0x20000000, 0, 0.0001, 0.0001)
        conn.queue(PendingShare(share, old_en1, time.time(), tip, written=True))  # unanswered at the drop
        await pool.stop()
        await pool.start()  # no resume window: the session is gone
        await wait_for(lambda: conn.unrecoverable == 1, 60, "the queued share counted unrecoverable")
    finally:
        await agent.stop()
        await pool.stop()
    assert conn.client is not None and conn.client.extranonce1 != old_en1
    assert conn.lost_shares == 0 and not conn.outbox


async def test_shares_queued_when_the_pool_configuration_is_replaced_are_counted_lost() -> None:
    pool = LocalPool(easy_pool_settings(start_difficulty=NO_SHARES, network_difficulty=1e6))  # only the queued one
    await pool.start()
    agent = agent_for(pool.url)
    await agent.start()
    try:
        conn = agent.pools.groups[0].connections[0]
        share = Share("1", b"\0\0\0\1", 0, 1, 0x20000000, 0x20000000, 0, 0.0001, 0.0001)
        conn.queue(PendingShare(share, b"\0\0\0\7", time.time(), b"\0" * 32))
        before = agent.stats.dropped_shares
        await agent.apply_pools(agent.config)
        assert agent.stats.dropped_shares == before + 1
    finally:
        await agent.stop()
        await pool.stop()
