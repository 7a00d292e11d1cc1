"""The share accounting and failover state reach REST, the cgminer API (extra keys only) and Prometheus."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from openmos.stratum.protocol import encode_notification

from api_stack import running_device
from helpers import wait_for


async def cgminer(port: int, command: str) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(json.dumps({"command": command}).encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    reply: dict[str, Any] = json.loads(data.rstrip(b"\0"))
    return reply


async def test_refused_difficulty_and_share_fates_are_reported_everywhere() -> None:
    async with running_device() as dev, httpx.AsyncClient(base_url=dev.rest_url) as client:
        await wait_for(lambda: bool(dev.pool._sessions), 30, "the agent's pool session")
        hostile = encode_notification("mining.set_difficulty", [0]).replace(b"[0]", b"[1e400]")
        for session in dev.pool._sessions:
            session.send(hostile)
        conn = dev.agent.pools.groups[0].connections[0]
        conn.unrecoverable, conn.resent_duplicates = 2, 1  # as _flush_outbox counts them

        await wait_for(lambda: getattr(conn.client, "difficulty_rejections", 0) == 1, 30, "the value refused")
        shares = (await client.get("/api/v1/status")).json()["shares"]
        assert shares["difficulty_refused"] == 1 and shares["unrecoverable"] == 2
        assert shares["resent_duplicates"] == 1 and shares["lost"] == 0 and shares["governor_active"] is False
        pool = (await client.get("/api/v1/pools")).json()[0]
        assert pool["difficulty_refused"] == 1 and pool["mining_difficulty"] >= pool["difficulty"] > 0
        assert pool["bad_for_s"] == 0.0 and pool["unrecoverable"] == 2

        rows = (await cgminer(dev.cgminer_port, "pools"))["POOLS"]
        assert rows[0]["Difficulty Refused"] == 1 and rows[0]["Unrecoverable Shares"] == 2
        assert rows[0]["Governor Active"] is False and rows[0]["Bad For"] == 0.0
        summary = await cgminer(dev.cgminer_port, "summary")
        assert summary["SUMMARY"][0]["OpenMOS Unrecoverable"] == 2
        assert summary["SUMMARY"][0]["OpenMOS Difficulty Refused"] == 1

        metrics = (await client.get("/metrics")).text
        assert f'openmos_share_fate_total{{fate="unrecoverable",pool="{conn.endpoint.url}"}} 2.0' in metrics
        assert f'openmos_pool_state{{pool="{conn.endpoint.url}",what="difficulty_refused"}} 1.0' in metrics
