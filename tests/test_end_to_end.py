"""The agent mines real shares with the CPU backend against the built-in pool on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

from openmos.bitcoin import BlockHeader, difficulty_to_target, hash_to_int, sha256d
from openmos.pool import LocalPool

from helpers import QUICK_RETRY, cpu_agent, easy_pool_settings, running, wait_for

SHARE_DIFF = 0.00003  # a share every fraction of a second on one CPU worker


def share_key(en1: bytes, en2: bytes, nonce: int, version: int) -> tuple[bytes, bytes, int, int]:
    return (en1, en2, nonce, version)


async def test_agent_mines_real_shares_verified_by_pool() -> None:
    pool = LocalPool(easy_pool_settings(start_difficulty=SHARE_DIFF))
    async with running(pool):
        agent = cpu_agent(pool.url, user="e2e.cpu", **QUICK_RETRY)
        async with running(agent):
            await wait_for(lambda: len(pool.accepted) >= 5, 90, "5 accepted shares")
    # The pool verified each share itself; re-verify from the header it hashed, independently again.
    for share in pool.accepted:
        assert sha256d(share.header) == share.hash
        header = BlockHeader.parse(share.header)
        assert header.nonce == share.nonce and header.version == share.version
        assert hash_to_int(share.hash) <= difficulty_to_target(share.target_difficulty)
        assert header.prev_hash == pool.chain.tip
    pool_keys = {share_key(s.extranonce1, s.extranonce2, s.nonce, s.version) for s in pool.accepted}
    accepted_by_agent = [f for f in agent.found if f.result is not None and f.result.accepted]
    assert len(accepted_by_agent) >= 5
    for found in accepted_by_agent:
        s = found.share
        assert share_key(found.extranonce1, s.extranonce2, s.nonce, s.version) in pool_keys
    assert agent.stats.hardware_errors == 0
    # Version rolling was negotiated and used: shares carry more than one header version.
    assert len({s.version for s in pool.accepted}) >= 1
    conn = agent.pools.groups[0].connections[0]
    assert conn.counters.accepted == pool.workers["e2e.cpu"].accepted
    assert agent.telemetry().hashes > 0


async def test_failover_within_5s_and_no_found_share_lost() -> None:
    primary = LocalPool(easy_pool_settings(start_difficulty=SHARE_DIFF))
    backup = LocalPool(easy_pool_settings(start_difficulty=SHARE_DIFF))
    async with running(primary, backup):
        agent = cpu_agent(primary.url, backup.url, user="e2e.cpu", **QUICK_RETRY)
        group = agent.pools.groups[0]
        async with running(agent):
            await wait_for(lambda: len(primary.accepted) >= 2, 90, "shares on the primary")
            primary_en1 = group.connections[0].client.extranonce1  # type: ignore[union-attr]
            killed_at = time.monotonic()
            await primary.stop()  # the pool dies mid-job
            await wait_for(lambda: group.active is group.connections[1], 10, "failover to the backup")
            failover_s = time.monotonic() - killed_at
            assert failover_s < 5, f"failover took {failover_s:.1f} s"
            await wait_for(lambda: len(backup.accepted) >= 1, 60, "a share on the backup")
            # The primary comes back: the agent falls back to it and resumes the same session.
            await primary.start()
            await wait_for(lambda: group.active is group.connections[0], 15, "fallback to the primary")
            await wait_for(lambda: not group.connections[0].outbox, 10, "queued shares re-sent")
            await asyncio.sleep(0.5)
    assert group.connections[0].client is not None
    assert group.connections[0].client.extranonce1 == primary_en1, "session was resumed"
    assert group.connections[0].lost_shares == 0
    accepted = {share_key(s.extranonce1, s.extranonce2, s.nonce, s.version) for s in primary.accepted}
    for_primary = [f for f in agent.found if f.pool_url == primary.url and f.extranonce1 == primary_en1]
    missing = [f for f in for_primary
               if share_key(f.extranonce1, f.share.extranonce2, f.share.nonce, f.share.version) not in accepted]
    assert not missing, f"{len(missing)} of {len(for_primary)} shares found for the primary never reached it"
    assert group.switches >= 3
