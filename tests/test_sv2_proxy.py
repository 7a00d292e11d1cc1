"""``mos proxy``: V1 CPU miners -> the proxy -> one encrypted V2 extended channel -> ``mos pool``.

Shares are validated by the proxy (its own header rebuild), forwarded when they meet the upstream target
and validated again by the pool; each miner gets its own slice of the extranonce space; the proxy fails
over to the next V2 pool; a wrong authority key or garbage from a miner is refused cleanly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from openmos.bitcoin import BlockHeader, sha256d
from openmos.pool import LocalPool
from openmos.pool.sv2 import Sv2PoolServer
from openmos.proxy import FarmProxy, ProxySettings
from openmos.proxy.api import ProxyApis
from openmos.stratum.v2.noise import KeyPair, encode_authority_key

from helpers import QUICK_RETRY, cpu_agent, running, v2_pool, wait_for

SHARE_DIFF = 0.00003  # a share every fraction of a second per CPU miner, upstream and at the proxy


async def cgminer(port: int, request: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    result: dict[str, Any] = json.loads(data.rstrip(b"\0"))
    return result


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[LocalPool, Sv2PoolServer]]:
    async with v2_pool(SHARE_DIFF) as both:
        yield both


def proxy_for(*urls: str, **kw: object) -> FarmProxy:
    settings = ProxySettings(upstreams=urls, user="farm.proxy", port=0, start_difficulty=SHARE_DIFF, vardiff=None,
                             retry_delay=0.2, **kw)  # type: ignore[arg-type]
    return FarmProxy(settings)


async def test_v1_cpu_miners_through_the_proxy_to_the_v2_pool(upstream: tuple[LocalPool, Sv2PoolServer]) -> None:
    pool, v2 = upstream
    proxy = proxy_for(v2.url)
    await proxy.start()
    apis = ProxyApis(proxy, cgminer_port=0, rest_port=0)
    await apis.start()
    await proxy.wait_upstream(20)
    miners = [cpu_agent(proxy.url, user=f"rig{i}", **QUICK_RETRY) for i in range(2)]
    for m in miners:
        await m.start()
    try:
        await wait_for(lambda: all(d.accepted >= 3 for d in proxy.stats()) and len(proxy.stats()) == 2, 120,
                       "3 proxy-validated shares from each miner")
        await wait_for(lambda: sum(d.upstream_accepted for d in proxy.stats()) >= 6, 30, "upstream acceptance")
        # Per-downstream statistics on the cgminer API, REST and Prometheus.
        devs = await cgminer(apis.cgminer.port, b'{"command": "devs"}')
        assert {row["Worker"] for row in devs["DEVS"]} == {"rig0", "rig1"}
        assert all(row["Accepted"] >= 3 for row in devs["DEVS"])
        bad = await cgminer(apis.cgminer.port, b'{"command": "addpool", "parameter": "x"}')
        assert bad["STATUS"][0]["STATUS"] == "E"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{apis.rest_port}") as http:
            rows = (await http.get("/api/v1/proxy/downstreams")).json()
            assert {r["worker"] for r in rows} == {"rig0", "rig1"}
            metrics = (await http.get("/metrics")).text
            assert 'openmos_proxy_downstream_shares_total{peer=' in metrics and 'worker="rig1"' in metrics
    finally:
        for m in miners:
            await m.stop()
        await wait_for(lambda: sum(d.forwarded - d.upstream_accepted - d.upstream_rejected
                                   for d in proxy.stats()) == 0, 30, "answers to every forwarded share")
        await apis.stop()
        await proxy.stop()
    stats = {d.worker: d for d in proxy.stats()}
    assert set(stats) == {"rig0", "rig1"}
    # Each miner mines its own slice: distinct extranonce1 = upstream prefix + local id.
    assert stats["rig0"].extranonce1 != stats["rig1"].extranonce1
    assert stats["rig0"].extranonce1[:8] == stats["rig1"].extranonce1[:8]
    # The pool counted the forwarded shares for the proxy's account and verified them itself.
    assert pool.workers["farm.proxy"].accepted == sum(d.upstream_accepted for d in stats.values())
    assert sum(d.upstream_rejected for d in stats.values()) == 0
    for share in pool.accepted:
        assert sha256d(share.header) == share.hash
        assert BlockHeader.parse(share.header).nonce == share.nonce
    # Every miner's own view agrees with the proxy's per-downstream count.
    for m in miners:
        conn = m.pools.groups[0].connections[0]
        assert conn.counters.accepted == stats[conn.endpoint.user].accepted
    assert len(proxy.forward_latency) == sum(d.forwarded for d in stats.values())


async def test_proxy_fails_over_to_the_next_v2_pool(upstream: tuple[LocalPool, Sv2PoolServer]) -> None:
    pool, v2 = upstream
    async with v2_pool(SHARE_DIFF) as (backup_pool, backup_v2):
        proxy = proxy_for(v2.url, backup_v2.url)
        async with running(proxy):
            await proxy.wait_upstream(20)
            miner = cpu_agent(proxy.url, user="rig", **QUICK_RETRY)
            async with running(miner):
                await wait_for(lambda: pool.workers.get("farm.proxy") is not None
                               and pool.workers["farm.proxy"].accepted >= 1, 120, "a share on the primary")
                await v2.stop()
                await pool.stop()
                await wait_for(lambda: proxy.upstream_index == 1 and proxy.upstream is not None
                               and not proxy.upstream.closed.is_set(), 30, "failover to the backup pool")
                await wait_for(lambda: backup_pool.workers.get("farm.proxy") is not None
                               and backup_pool.workers["farm.proxy"].accepted >= 1, 120, "a share on the backup")
    assert proxy.upstream_switches >= 1


async def test_wrong_authority_key_means_no_upstream_and_miners_are_told(
        upstream: tuple[LocalPool, Sv2PoolServer]) -> None:
    _pool, v2 = upstream
    bad = f"stratum2+tcp://127.0.0.1:{v2.port}/{encode_authority_key(KeyPair.generate().xonly)}"
    proxy = proxy_for(bad)
    await proxy.start()
    try:
        await wait_for(lambda: any("authority" in e for e in proxy.upstream_errors.values()), 20, "refusal")
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b'{"id": 1, "method": "mining.subscribe", "params": []}\n')
        line = await asyncio.wait_for(reader.readline(), 10)
        assert b"no upstream pool" in line
        writer.close()
    finally:
        await proxy.stop()


async def test_hostile_downstream_is_answered_and_dropped(upstream: tuple[LocalPool, Sv2PoolServer]) -> None:
    _pool, v2 = upstream
    proxy = proxy_for(v2.url)
    await proxy.start()
    await proxy.wait_upstream(20)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b'{"id": 1, "method": "mining.subscribe", "params": []}\n')
        writer.write(b'{"id": 2, "method": "mining.authorize", "params": ["x", "y"]}\n')
        writer.write(b'{"id": 3, "method": "mining.submit", "params": ["x", "nope", "00", "00", "00"]}\n')
        writer.write(b'{"id": 4, "method": "mining.submit", "params": ["x", 1e400, [], null, NaN]}\n')
        for _ in range(12):
            writer.write(b"{garbage\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 20)  # the proxy hangs up after too much garbage
        assert b"job not found" in data
        assert proxy.protocol_errors >= 10
        assert not proxy.downstreams
        writer.close()
    finally:
        await proxy.stop()


async def test_connections_past_the_cap_are_refused_quietly(upstream: tuple[LocalPool, Sv2PoolServer],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Attack: connections past max_downstreams. Each was refused with its own warning (904 connections over the
    cap wrote 904 lines); now they are closed at once, counted, and logged once per 1,000."""
    _pool, v2 = upstream
    proxy = proxy_for(v2.url, max_downstreams=3)
    await proxy.start()
    try:
        held = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(3)]
        await wait_for(lambda: len(proxy.downstreams) == 3, 30, "three downstreams")
        for _ in range(200):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await asyncio.wait_for(reader.read(), 30) == b""  # closed unanswered
            writer.close()
        assert proxy._listener.refused == 200 and len(proxy.downstreams) == 3
        lines = [r for r in caplog.records if "refused" in r.getMessage() or "refusing" in r.getMessage()]
        assert len(lines) <= 1
        for _, w in held:
            w.close()
    finally:
        await proxy.stop()
