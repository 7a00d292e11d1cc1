"""Stratum V2 pools may acknowledge shares in batches (one SubmitShares.Success for several submits; the
specification's example acknowledges every 10). A healthy batching pool must keep the work -- no stall
suspicion while its shares wait for their batch -- and a V2 pool that really stops answering must still
lose the work to the hot standby at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from openmos.miner import MiningAgent
from openmos.pool import LocalPool
from openmos.pool.sv2 import Sv2PoolServer, generate_authority_key
from openmos.stratum.v2.client import Sv2Client
from openmos.stratum.v2.messages import SubmitSharesSuccess
from openmos.stratum.v2.url import Sv2PoolUrl

from helpers import cpu_agent, easy_pool_settings, running, wait_for

SHARE_DIFF = 0.00003  # a share every fraction of a second on one CPU worker
BATCH = 4  # the pool acknowledges every 4 accepted submits ...
BATCH_AFTER_S = 3.0  # ... or 3 s after the oldest unacknowledged one


@contextlib.asynccontextmanager
async def batching_primary_and_agent(**stratum: Any) -> AsyncIterator[tuple[Sv2PoolServer, LocalPool, MiningAgent]]:
    """A V2 primary that acknowledges in batches, a V1 backup (the hot standby), an agent on both."""
    primary, backup = LocalPool(easy_pool_settings(start_difficulty=SHARE_DIFF)), LocalPool(easy_pool_settings())
    async with running(primary, backup):
        v2 = Sv2PoolServer(primary, generate_authority_key()[0], ack_every=BATCH, ack_after_s=BATCH_AFTER_S)
        async with running(v2):
            # Long confirmation timeouts: anything that moves the work within them is the stall suspicion.
            agent = cpu_agent(v2.url, backup.url, **{"stall_timeout_s": 120.0, "response_timeout_s": 120.0,
                                                     "stall_suspect_s": 1.0, **stratum})
            async with running(agent):
                yield v2, backup, agent


def acked_shares(agent: MiningAgent) -> int:
    conn = agent.pools.groups[0].connections[0]
    return conn.counters.accepted


async def test_a_healthy_pool_acknowledging_in_batches_keeps_the_work() -> None:
    async with batching_primary_and_agent() as (_v2, backup, agent):
        group = agent.pools.groups[0]
        await wait_for(lambda: group.connections[1].client is not None, 60, "the hot standby")
        await wait_for(lambda: acked_shares(agent) >= 5 * BATCH, 180, f"{5 * BATCH} shares acknowledged in batches")
        client = group.connections[0].client
        assert isinstance(client, Sv2Client)
        assert client.ack_batch >= 2, "the pool's batches were not seen"
        assert group.stall_suspicions == 0, "a healthy batching V2 pool was suspected of a stall"
        assert group.active is group.connections[0]
        assert all(w.accepted == 0 for w in backup.workers.values()), "work went to the standby"
        print(f"{acked_shares(agent)} shares acknowledged in batches of up to {client.ack_batch}, "
              f"slowest batch wait {client.ack_wait_s:.2f} s, no stall suspected")
        learnt = client.ack_batch
        await client.close("test: the pool's connection dropped")  # the next session starts from what was learnt
        conn = group.connections[0]
        await wait_for(lambda: conn.client is not client and conn.client is not None, 60, "a new session")
        again = conn.client
        assert isinstance(again, Sv2Client) and again.ack_batch >= learnt


async def test_a_batching_pool_that_stops_answering_still_loses_the_work_at_once() -> None:
    async with batching_primary_and_agent() as (v2, backup, agent):
        group = agent.pools.groups[0]
        await wait_for(lambda: group.connections[1].client is not None, 60, "the hot standby")
        await wait_for(lambda: acked_shares(agent) >= 2 * BATCH, 180, "two batches acknowledged")
        v2.ack_every, v2.ack_after_s = 10**6, 0.0  # the pool stops acknowledging (TCP open, jobs quiet)
        began = time.monotonic()
        await wait_for(lambda: backup.workers.get("me.rig") is not None and backup.workers["me.rig"].accepted >= 1,
                       100, "a share accepted by the standby")
        took = time.monotonic() - began
        primary_client = group.connections[0].client
        assert primary_client is not None and not primary_client.closed.is_set(), "suspected session was closed"
        assert group.stall_suspicions >= 1 and group.active is group.connections[1]
        print(f"batching V2 pool stalled -> first share on the standby {took:.2f} s")


@pytest.mark.parametrize("covered", [1, 3, 200])
async def test_what_one_acknowledgement_teaches_is_bounded_by_the_submits_waiting(covered: int) -> None:
    """A hostile or odd last_sequence_number cannot make the client believe in batches larger than the
    submits it has outstanding; the batch's wait is that of its oldest submit."""
    url = Sv2PoolUrl.parse(f"stratum2+tcp://127.0.0.1:1/{generate_authority_key()[1]}")
    client = Sv2Client(url, "me")
    client.channel_id = 1
    loop, now = asyncio.get_running_loop(), time.monotonic()
    for seq in range(1, 6):  # five submits waiting, sent 9 .. 5 s ago
        client._pending[seq] = loop.create_future()
        client._sent_at[seq] = now - 10 + seq
    client._acknowledge(SubmitSharesSuccess(1, covered, covered, 0))
    assert client.ack_batch == min(covered, 5) and client.ack_wait_s == 0.0  # a full batch: no timer seen
    if 1 < covered < 5:  # one more submit acknowledged alone: a partial batch, closed on time after 5 s
        client._acknowledge(SubmitSharesSuccess(1, covered + 1, 1, 0))
        assert 5.0 <= client.ack_wait_s < 60.0 and client.ack_batch == min(covered, 5)


@pytest.mark.parametrize(("every", "after"), [(0, 0.0), (-1, 0.0), (1, float("nan")), (1, -1.0), (1, 1e400)])
async def test_the_pool_refuses_nonsense_batching(every: int, after: float) -> None:
    pool = LocalPool(easy_pool_settings())
    with pytest.raises(ValueError, match="ack_"):
        Sv2PoolServer(pool, generate_authority_key()[0], ack_every=every, ack_after_s=after)
