"""Stall suspicion: a pool that stops answering (TCP open) loses the work to the hot standby at once, no share lost,
also with no share at stake (the liveness probe); a slow but healthy pool keeps it; hostile probe answers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from openmos.miner import MiningAgent
from openmos.pool import LocalPool

from helpers import cpu_agent, easy_pool_settings, running, wait_for
from hostile_pool import HostilePool

ANSWER = '{"id":{id},"result":true,"error":null}'
NO_SHARES = "1000"  # a pool difficulty at which a CPU finds no share during a test: nothing is at stake


def two_pool_agent(primary: HostilePool, backup: HostilePool, **stratum: Any) -> MiningAgent:
    # Long confirmation timeouts: anything that moves the work within them is the stall suspicion.
    return cpu_agent(primary.url, backup.url, **{"stall_timeout_s": 60.0, "response_timeout_s": 60.0,
                                                 "stall_suspect_s": 1.0, **stratum})


@contextlib.asynccontextmanager
async def two_pools_and_agent(difficulty: str = "0.00005", probe_replies: list[str] | None = None,
                              **stratum: Any) -> AsyncIterator[tuple[HostilePool, HostilePool, MiningAgent]]:
    """Two scripted pools and a running agent on them (primary first); all stopped on the way out.
    ``probe_replies``: how the primary answers the liveness probe (the backup answers it plainly)."""
    primary, backup = HostilePool(difficulty=difficulty), HostilePool(difficulty=difficulty)
    primary.probe_replies, backup.probe_replies = probe_replies, [ANSWER] if probe_replies else None
    async with running(primary, backup):
        agent = two_pool_agent(primary, backup, **stratum)
        async with running(agent):
            yield primary, backup, agent


async def test_pool_that_stops_answering_hands_work_to_hot_standby_without_losing_shares() -> None:
    # A fallback check every second (a suspected session is not fallen back to before it answers again).
    async with two_pools_and_agent(fallback_interval_s=1.0) as (primary, backup, agent):
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


@pytest.mark.parametrize("difficulty", ["0.00005", NO_SHARES])
async def test_slow_but_healthy_pool_keeps_the_work(difficulty: str) -> None:
    """Shares (or, with none at stake, liveness probes) answered after 0.5 s: the pool keeps the work."""
    async with two_pools_and_agent(difficulty, [ANSWER], stall_probe_s=0.5) as (primary, backup, agent):
        group = agent.pools.groups[0]
        conn = group.connections[0]
        p = await primary.session()
        p.answer_delay = 0.5
        standby = await backup.session()
        if difficulty == NO_SHARES:
            await wait_for(lambda: conn.probe_counts()[1] >= 7, 180, "slow probe answers")
        else:
            await wait_for(lambda: conn.counters.accepted >= 8, 180, "slow answers accepted")
    assert group.stall_suspicions == 0 and group.switches == 1
    assert not standby.submits
    if difficulty == NO_SHARES:
        assert not p.submits
    else:
        assert conn.answer_s >= 0.4  # the pool's slowness was learnt


async def test_stall_with_no_share_at_stake_is_found_by_the_liveness_probe() -> None:
    started = time.monotonic()
    async with two_pools_and_agent(NO_SHARES, [ANSWER], stall_probe_s=0.5, fallback_interval_s=1.0) as (
            primary, backup, agent):
        group = agent.pools.groups[0]
        conn = group.connections[0]
        p = await primary.session()
        await backup.session()
        await wait_for(lambda: group.connections[1].client is not None and conn.probe_counts()[1] >= 3, 60,
                       "liveness probes answered with the hot standby ready")
        client = conn.client
        assert client is not None and client.probe_answered
        p.mute = True  # the TCP connection stays open; nothing comes back any more
        began = time.monotonic()
        await wait_for(lambda: group.active is group.connections[1], 60, "the work on the hot standby")
        took = time.monotonic() - began
        assert not client.closed.is_set(), "suspected session was closed"
        await p.unmute()  # the network is back: the probe sent into the stall is answered
        await wait_for(lambda: group.active is conn, 120, "fallback to the answering primary")
    elapsed = time.monotonic() - started
    assert conn.stall_suspicions == 1 and group.stall_suspicions == 1
    assert not p.submits, "a share was at stake: this test is about the probe"
    assert took < 60.0, "the switch only came with the confirmation timeout"
    # Rate-limited: one probe per stall_probe_s at most (plus the handshake's request on each session).
    sent, answered = conn.probe_counts()
    assert sent <= elapsed / 0.5 + len(primary.sessions) and sum(s.probes for s in primary.sessions) <= sent
    assert answered == sent  # the one sent into the stall was answered once the network was back
    print(f"stall with nothing at stake -> work on the standby {took:.2f} s; {sent} probes sent in {elapsed:.0f} s")


async def test_hostile_probe_answers_are_handled() -> None:
    """Odd but well-formed answers count (any answer says the pool is alive); unparseable ones are bad lines;
    a duplicate answer is ignored; an answer to an id never sent answers nothing (then: a stall)."""
    nested = '{"id":{id},"result":' + "[" * 5000 + "]" * 5000 + ',"error":null}'
    replies = [
        '{"id":{id},"result":1e400,"error":null}',
        '{"id":{id},"result":NaN,"error":{"code":"x","message":[1,{"deep":[]}]}}',
        f"{ANSWER}\n{ANSWER}",  # answered twice
        f"{nested}\n" + '{"id":[{id}],"result":true}\n' + ANSWER,  # too deep, a list as id, then the answer
        '{"id":999999999,"result":true,"error":null}',  # spoofed: answers a request never sent
    ]
    async with two_pools_and_agent(NO_SHARES, replies, stall_probe_s=0.5) as (primary, backup, agent):
        group = agent.pools.groups[0]
        conn = group.connections[0]
        p = await primary.session()
        await backup.session()
        await wait_for(lambda: group.active is group.connections[1], 120, "the spoofed answer left unanswered")
        client = conn.client
        assert client is not None and not client.closed.is_set()
    assert p.probes == 5 and client.probe_answers == 4 and conn.stall_suspicions == 1
    assert client.bad_lines == 2  # the too-deep line and the list id, counted; the session went on
    assert not client._pending and agent.stats.work_errors == 0


async def test_stall_on_the_last_pool_goes_back_to_a_better_pool_at_once() -> None:
    """No standby below the backup: a suspected stall there tries the primary at once, not at the next fallback
    check (60 s here)."""
    primary = LocalPool(easy_pool_settings(start_difficulty=1000.0, network_difficulty=1e6))
    await primary.start()
    await primary.stop()  # down when the agent starts: it mines on the backup
    backup = HostilePool(difficulty=NO_SHARES)
    backup.probe_replies = [ANSWER]
    await backup.start()
    agent = cpu_agent(primary.url, backup.url, stall_timeout_s=120.0, response_timeout_s=120.0, stall_suspect_s=1.0,
                      stall_probe_s=0.5, fallback_interval_s=60.0, retry_delay_s=0.2)
    await agent.start()
    try:
        group = agent.pools.groups[0]
        b = await backup.session()
        await wait_for(lambda: group.active is group.connections[1], 60, "mining on the backup")
        # The first fallback check comes at once; the next one a minute later.
        await wait_for(lambda: group._last_probe > 0, 60, "the first fallback check")
        await primary.start()  # back, but the next fallback check is a minute away
        b.mute = True
        began = time.monotonic()
        await wait_for(lambda: group.active is group.connections[0], 50, "the work back on the primary")
        took = time.monotonic() - began
    finally:
        await agent.stop()
        await primary.stop()
        await backup.stop()
    assert group.connections[1].stall_suspicions == 1 and took < 50
