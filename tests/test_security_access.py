"""Access control (security items 7, 8, 15, 20). Items 1-5: test_security_updates.py; 6: the allow-list tests
in test_api_cgminer.py; 10-14, 17, 18: test_security_scan.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from openmos.api.auth import AuthStore, Role
from openmos.api.cgminer import CgminerApi
from openmos.api.rest import create_app
from openmos.api.view import DeviceView
from openmos.base.net import AllowList
from openmos.hw.cpu import CpuHardware
from openmos.miner import AgentConfig, MiningAgent
from openmos.stratum import PoolUrl
from openmos.stratum.client import ClientOptions, StratumClient

from fake_pool import FakeConnection, FakePool

DEFAULTS = [("admin", "admin"), ("root", "root"), ("root", "admin"), ("miner", "miner"), ("admin", "")]


def idle_agent() -> MiningAgent:
    return MiningAgent(AgentConfig.from_dict(
        {"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "x"}]}]}), CpuHardware(), )


def client_for(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")  # type: ignore[arg-type]


async def test_8_no_default_credentials_work() -> None:
    auth = AuthStore(None)
    async with client_for(create_app(DeviceView(idle_agent()), auth)) as client:
        for user, password in DEFAULTS:
            r = await client.post("/api/v1/auth/login", json={"user": user, "password": password or "x"})
            assert r.status_code == 401
        assert (await client.post("/api/v1/actions/pause")).status_code == 403  # nothing works before setup
        auth.setup_owner("admin", "a-long-owner-password")
        for user, password in DEFAULTS:
            r = await client.post("/api/v1/auth/login", json={"user": user, "password": password or "x"})
            assert r.status_code in (401, 429)  # 429: this client already failed five times


async def test_20_every_write_endpoint_enforces_roles() -> None:
    auth = AuthStore(None)
    auth.setup_owner("admin", "a-long-owner-password")
    auth.add_user("viewer", "viewer-password", Role.READONLY)
    auth.add_user("ops", "operator-password", Role.OPERATOR)
    app = create_app(DeviceView(idle_agent()), auth)
    writes = [(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops
              if m.upper() in {"POST", "PUT", "PATCH", "DELETE"} and not path.startswith("/api/v1/auth")]
    assert len(writes) >= 7
    fill = {"{index}": "0", "{action}": "pause", "{board}": "0"}
    async with client_for(app) as client:
        viewer = {"Authorization": f"Bearer {auth.login('viewer', 'viewer-password')}"}
        ops = {"Authorization": f"Bearer {auth.login('ops', 'operator-password')}"}
        for method, path in writes:
            for key, value in fill.items():
                path = path.replace(key, value)
            assert (await client.request(method, path, json={})).status_code == 401, (method, path)
            assert (await client.request(method, path, json={}, headers={"Authorization": "Bearer x"})).status_code \
                == 401
            assert (await client.request(method, path, json={}, headers=viewer)).status_code == 403, (method, path)
            status = (await client.request(method, path, json={}, headers=ops)).status_code
            assert status not in (401, 403), (method, path, status)
        # Reads stay open; the audit log is for signed-in users only.
        assert (await client.get("/api/v1/status")).status_code == 200
        assert (await client.get("/api/v1/audit")).status_code == 401


@pytest.mark.parametrize("evil", ["$(touch {p})", "`touch {p}`", "x; touch {p}", "x | touch {p}", "x && touch {p}"])
async def test_7_shell_metacharacters_never_execute(tmp_path: Path, evil: str) -> None:
    marker = tmp_path / "pwned"
    payload = evil.format(p=marker)
    agent = idle_agent()
    auth = AuthStore(None)
    auth.setup_owner("admin", "a-long-owner-password")
    token = auth.login("admin", "a-long-owner-password")
    async with client_for(create_app(DeviceView(agent), auth)) as client:
        r = await client.post("/api/v1/pools", json={"url": "stratum+tcp://127.0.0.1:3333", "user": payload},
                              headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201
        r = await client.post("/api/v1/pools", json={"url": f"stratum+tcp://{payload}:3333", "user": "u"},
                              headers={"Authorization": f"Bearer {token}"})
        assert r.status_code in (201, 422)
    api = CgminerApi(DeviceView(agent), AllowList.parse(["127.0.0.1"]))
    await api.respond(f"addpool|stratum+tcp://127.0.0.1:3334,{payload},x".encode(), "127.0.0.1")
    await asyncio.sleep(0.1)
    assert not marker.exists()
    users = [c.endpoint.user for c in agent.pools.connections()]
    assert users.count(payload) == 2  # kept as a literal string, never interpreted


async def test_15_client_reconnect_to_an_unlisted_host_is_refused() -> None:
    async def hijack(conn: FakeConnection) -> None:
        await conn.handshake()
        await conn.send({"id": None, "method": "client.reconnect", "params": ["attacker.example", 3333, 0]})
        await asyncio.sleep(2)

    pool = FakePool(hijack)
    await pool.start()
    client = StratumClient(PoolUrl("127.0.0.1", pool.port, False), "me", options=ClientOptions())
    await client.connect()
    await asyncio.sleep(0.3)
    assert client.reconnect_target is None and not client.closed.is_set()
    await client.close()
    await pool.stop()
