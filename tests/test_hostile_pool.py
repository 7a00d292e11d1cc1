"""The agent against a scripted hostile pool: stale tips, absurd difficulties, floods, garbage, failover."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from openmos.miner import MiningAgent
from openmos.pool import LocalPool
from openmos.stratum.difficulty import difficulty_for_interval

from helpers import cpu_agent, easy_pool_settings, running, wait_for
from hostile_pool import PREV_A, PREV_B, HostilePool, notify


@contextlib.asynccontextmanager
async def mining(*pools: HostilePool | LocalPool, **stratum: object) -> AsyncIterator[MiningAgent]:
    """Start ``pools``, then a one-worker CPU agent on them in that order; stop it, then them, on the way out."""
    async with running(*pools):
        agent = cpu_agent(*(pool.url for pool in pools), **stratum)
        async with running(agent):
            yield agent


def accepted(pool: LocalPool, shares: int) -> bool:
    return pool.workers.get("me.rig") is not None and pool.workers["me.rig"].accepted >= shares


async def test_new_prev_hash_without_clean_flag_abandons_old_block() -> None:
    pool = HostilePool(difficulty="0.00005")
    async with mining(pool):
        session = await pool.session()
        await wait_for(lambda: session.jobs_submitted("a1") >= 3, 120, "shares on the first block")
        await session.notify(notify("b1", prev=PREV_B, clean=False))  # a new tip, announced as a non-clean job
        await session.sync()  # once the pong is back, the agent has seen the new tip
        await wait_for(lambda: session.jobs_submitted("b1") >= 3, 120, "shares on the new block")
        await session.sync()
    assert session.jobs_submitted("a1", after_sync=1) == 0, "a share for the superseded block was sent"
    assert session.jobs_submitted("b1") >= 3


async def test_non_clean_update_on_same_block_reaches_the_hash_loop() -> None:
    pool = HostilePool(difficulty="0.00005")
    async with mining(pool):
        session = await pool.session()
        await wait_for(lambda: session.jobs_submitted("a1") >= 1, 120, "shares on the first job")
        # Same block, new transactions: clean=false is right here, and the old job stays valid.
        await session.notify(notify("a2", prev=PREV_A, clean=False, ntime="5f5e1001"))
        await session.sync()
        await wait_for(lambda: session.jobs_submitted("a2") >= 2, 120, "shares on the updated job")
    # The CPU used to stay on a 2^32-nonce work item for hours; now the update is mined within seconds.
    assert session.jobs_submitted("a2") >= 2


async def test_hostile_difficulties_refused_and_counted_mining_continues() -> None:
    pool = HostilePool(difficulty="0.0001")
    async with mining(pool) as agent:
        session = await pool.session()
        await wait_for(lambda: session.jobs_submitted("a1") >= 1, 120, "first share")
        for raw in ("1e400", "NaN", "0", "-1", "1e-300", "1e300", "true", '"5"'):
            await session.set_difficulty(raw)
            await session.notify(notify("a1"))  # a good message in between: no disconnect for 5 bad in a row
        await session.sync()
        client = agent.pools.groups[0].active.client  # type: ignore[union-attr]
        assert client is not None
        assert client.difficulty == 0.0001, "a hostile value replaced the difficulty"
        assert client.difficulty_rejections == 8
        # The governor follows the measured rate (a loaded CPU swings): held still while the edges are tested.
        agent.refresh_governor = lambda: False  # type: ignore[method-assign]
        # The edges come from this hardware's hashrate: one share a day or slower is used but counted (a pool
        # may mean it); more shares than the governor allows is used (the pool credits at its value) while the
        # hardware mines at the governor's floor; 200 times that is refused.
        allowed = agent.policy.difficulty_range
        assert 0 < allowed.low < allowed.governed_below < 0.0001 < allowed.slow_above < 1e18
        for raw in (repr(allowed.slow_above * 2), repr(allowed.governed_below / 2), repr(allowed.low / 2)):
            await session.set_difficulty(raw)
            await session.notify(notify("a1"))
        await session.sync()
        assert (client.difficulty_slow, client.difficulty_governed, client.difficulty_rejections) == (1, 1, 9)
        assert client.difficulty == allowed.governed_below / 2
        # The hardware mines at the governor's floor, from the same hashrate figure as the range that counted
        # the value as governed: the difficulty below the floor is lifted exactly to it.
        rate, max_rate = agent.governor_hashrate, agent.config.stratum.max_share_rate
        assert rate is not None and rate > 0
        floor = difficulty_for_interval(rate, 1.0 / max_rate)
        assert floor == pytest.approx(allowed.governed_below)
        assert agent.mining_difficulty(client.difficulty) == pytest.approx(floor)
        assert agent.mining_difficulty(floor / 100) == pytest.approx(floor)
        await session.set_difficulty("0.0001")
        await session.sync()
        before = len(session.submits)
        await wait_for(lambda: len(session.submits) >= before + 2, 120, "shares after the hostile values")
    assert agent.stats.work_errors == 0
    assert len(pool.sessions) == 1, "hostile values made the agent reconnect"


async def test_flood_difficulty_is_governed_and_bounded() -> None:
    pool = HostilePool(difficulty="0.0001")
    async with mining(pool, max_share_rate=2.0) as agent:
        session = await pool.session()
        await wait_for(lambda: len(session.submits) >= 1, 120, "first share")
        # The lowest value this hardware accepts: ~1000 shares/s if mined as sent.
        low = agent.policy.difficulty_range.low * 1.01
        await session.set_difficulty(repr(low))
        await session.sync()
        start, loop = len(session.submits), asyncio.get_running_loop()
        began = loop.time()
        await asyncio.sleep(6)
        await session.sync()
        elapsed = loop.time() - began
        sent = len(session.submits) - start
        client = agent.pools.groups[0].active.client  # type: ignore[union-attr]
        assert client is not None and client.difficulty == low
        # Governor: expected 2/s; the hard limit allows a burst of 50 plus 6/s. Without it: ~1000/s.
        assert sent <= 50 + 6 * elapsed + 10, f"{sent} submits in {elapsed:.1f} s"
        assert len(agent._tasks) <= 256


async def test_garbage_primary_is_backed_off_and_backup_mines() -> None:
    garbage = HostilePool()
    garbage.garbage = True
    backup = LocalPool(easy_pool_settings(start_difficulty=0.00005))
    async with mining(garbage, backup, retry_delay_s=1.0) as agent:
        await wait_for(lambda: accepted(backup, 3), 120, "shares accepted by the backup")
        await asyncio.sleep(3)
    primary = agent.pools.groups[0].connections[0]
    # It used to reconnect every few ms; now the back-off doubles (1, 2, 4, ... s) between attempts.
    assert len(garbage.sessions) <= 6, f"{len(garbage.sessions)} connections to the garbage pool"
    assert primary.quality_failures >= 1 and primary.backoff_s >= 1.0


async def test_pool_without_a_valid_job_fails_over() -> None:
    silent = HostilePool(send_job=False)
    backup = LocalPool(easy_pool_settings(start_difficulty=0.00005))
    async with mining(silent, backup, job_timeout_s=1.0) as agent:
        await wait_for(lambda: accepted(backup, 1), 120, "shares accepted by the backup")
    assert "no valid job" in agent.pools.groups[0].connections[0].last_error


async def test_rejecting_pool_fails_over() -> None:
    rejecting = HostilePool(difficulty="0.00005", accept=False)
    backup = LocalPool(easy_pool_settings(start_difficulty=0.00005))
    async with mining(rejecting, backup, max_share_rate=20.0, reject_ratio_min_shares=5) as agent:
        await wait_for(lambda: accepted(backup, 1), 180, "shares accepted by the backup")
    assert "rejected" in agent.pools.groups[0].connections[0].last_error


async def test_suggest_difficulty_sent_from_config_and_in_username() -> None:
    pool = HostilePool(difficulty="0.0005")
    async with mining(pool, suggest_difficulty=0.25, difficulty_suffix="user"):
        session = await pool.session()
        await wait_for(lambda: any(m.get("method") == "mining.suggest_difficulty" for m in session.received), 30,
                       "mining.suggest_difficulty")
    sent = {m["method"]: m["params"] for m in session.received if "method" in m}
    assert sent["mining.suggest_difficulty"] == [0.25]
    assert sent["mining.authorize"][0] == "me.rig+0.25"


async def test_default_suggestion_gives_a_cpu_a_share_every_few_seconds() -> None:
    pool = HostilePool(difficulty="0.0005")
    async with mining(pool, suggest_difficulty=None) as agent:  # None: the default, derived from the hashrate
        session = await pool.session()
        await wait_for(lambda: any(m.get("method") == "mining.suggest_difficulty" for m in session.received), 30,
                       "mining.suggest_difficulty")
    suggested = next(m["params"][0] for m in session.received if m.get("method") == "mining.suggest_difficulty")
    hashrate = agent.hardware.expected_hashrate()
    assert hashrate
    seconds = suggested * 2**32 / hashrate
    assert 1 <= seconds <= 10, f"suggested {suggested} means a share every {seconds:.1f} s"


async def test_pool_mixing_garbage_with_valid_messages_fails_over() -> None:
    primary = HostilePool(difficulty="0.0005")
    backup = LocalPool(easy_pool_settings(start_difficulty=0.00005))
    # A long back-off: the primary is healthy again once the garbage stops, and falling back to it before the
    # backup's first share (a CPU under load) left the test waiting for ever.
    async with mining(primary, backup, max_bad_messages=10, retry_delay_s=300.0) as agent:
        session = await primary.session()
        await session.sync()
        for _ in range(12):  # never 5 bad in a row (that alone drops a connection), but 12 within a minute
            await session.send(b"{not json\n")
            await session.notify(notify("a1"))
        await wait_for(lambda: accepted(backup, 1), 120, "shares accepted by the backup")
    conn = agent.pools.groups[0].connections[0]
    assert "bad messages" in conn.last_error and conn.quality_failures >= 1


async def test_pool_that_hangs_up_at_once_is_down_not_bad() -> None:
    """A listener that closes every connection without a word (a restarting pool, a proxy with no pool behind it)
    is retried like an unreachable pool (back-off capped at fallback_interval_s), not backed off for minutes as a
    quality failure: it used to double up to 18 s in the soak, delaying the fallback once the pool was back."""
    accepted: list[int] = []

    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    url = f"stratum+tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    backup = LocalPool(easy_pool_settings(start_difficulty=0.00005))
    try:
        async with running(backup):
            agent = cpu_agent(url, backup.url, retry_delay_s=0.2, fallback_interval_s=1.0)
            async with running(agent):
                await wait_for(lambda: len(accepted) >= 6, 120, "six connection attempts")
    finally:
        server.close()
    primary = agent.pools.groups[0].connections[0]
    assert primary.quality_failures == 0 and primary.backoff_s <= 1.0, (primary.quality_failures, primary.backoff_s)
    assert "handshake failed" in primary.last_error


def test_bad_messages_are_counted_in_a_sliding_window() -> None:
    """The count used to restart every 60 s: 9 bad messages at 59 s and 9 more at 61 s (18 within 2 s, limit
    10) never failed over. Any 60 s holding the limit fails over now; the same rate spread out does not."""
    from types import SimpleNamespace
    from typing import Any, cast

    from openmos.miner.config import PoolEndpoint, PoolGroupConfig, StratumTuning
    from openmos.miner.pool_manager import BAD_MESSAGE_WINDOW_S, PoolGroup

    def group() -> PoolGroup:
        return PoolGroup(PoolGroupConfig(pools=[PoolEndpoint(url="stratum+tcp://127.0.0.1:1", user="w")]),
                         StratumTuning(max_bad_messages=10), "agent", lambda *a: None, lambda g: None)

    def pool_session() -> Any:
        return SimpleNamespace(bad_lines=0, jobs_received=1, connected_at=0.0,
                               counters=SimpleNamespace(accepted=0, rejected=0))

    g, client = group(), pool_session()
    verdicts = []
    for t, bad_so_far in ((1.0, 0), (59.0, 9), (60.5, 9), (61.0, 18)):
        client.bad_lines = bad_so_far
        verdicts.append(g.quality_problem(cast(Any, client), now=t))
    assert verdicts[:3] == [None, None, None] and verdicts[3] is not None and "10 bad messages" in verdicts[3]

    # The limit's rate, spread out: 9 per window never fails over, in any window.
    g, client = group(), pool_session()
    step = BAD_MESSAGE_WINDOW_S / 9 + 0.1
    for i in range(1, 40):
        client.bad_lines = i
        assert g.quality_problem(cast(Any, client), now=i * step) is None, i
    # A flood in one check counts once per message up to the limit (memory bounded by the limit).
    client.bad_lines += 10**9
    assert g.quality_problem(cast(Any, client), now=40 * step) is not None
    assert len(g._bad_times) == 10
