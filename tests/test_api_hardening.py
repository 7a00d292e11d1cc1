"""Attacks on the device REST API (issue 12): each test performs the attack and fails if it works."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from openmos.api import auth as auth_module
from openmos.api.app import create_app
from openmos.api.auth import AuthStore, LoginThrottle, Role
from openmos.api.service import DeviceApis
from openmos.api.view import DeviceView
from openmos.hw.cpu import CpuHardware
from openmos.miner import AgentConfig, MiningAgent

OWNER = "a-long-owner-password"
POOL = {"groups": [{"name": "main", "pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "x"}]}]}


def idle_agent(api: dict[str, Any] | None = None) -> MiningAgent:
    doc = {**POOL, "api": {"cgminer_port": 0, "rest_port": 0, **(api or {})}}
    return MiningAgent(AgentConfig.from_dict(doc), CpuHardware())


@asynccontextmanager
async def serving(agent: MiningAgent, config_path: Path | None = None) -> AsyncIterator[DeviceApis]:
    apis = DeviceApis(agent, config_path=config_path)
    await apis.start()
    try:
        yield apis
    finally:
        await apis.stop()


def asgi_client(app: Any, client_ip: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(client_ip, 40000)),
                             base_url="http://localhost")


async def raw_http(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> bytes:
    """Send a hand-written request; return everything the server answers before it closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            data += chunk
    finally:
        writer.close()
    return data


def owner_store(path: Path | None = None) -> tuple[AuthStore, str]:
    """An owner account; the login throttle's clock stands still, so backoffs never expire mid-test."""
    auth = AuthStore(path, LoginThrottle(clock=lambda: 1000.0))
    auth.setup_owner("admin", OWNER)
    return auth, auth.login("admin", OWNER)


async def test_owner_persists_across_restarts_without_an_auth_file() -> None:
    """/auth/setup must not work again after a restart: the accounts live in the state directory."""
    async with serving(idle_agent()) as apis, httpx.AsyncClient(base_url=f"http://127.0.0.1:{apis.rest_port}") as c:
        assert (await c.post("/api/v1/auth/setup", json={"password": OWNER})).status_code == 201
        stored = apis.accounts_path.read_text()
        assert OWNER not in stored and apis.accounts_path.stat().st_mode & 0o077 == 0
    async with serving(idle_agent()) as apis, httpx.AsyncClient(base_url=f"http://127.0.0.1:{apis.rest_port}") as c:
        r = await c.post("/api/v1/auth/setup", json={"user": "mallory", "password": "mallory-password"})
        assert r.status_code == 409
        assert (await c.post("/api/v1/auth/login", json={"user": "admin", "password": OWNER})).status_code == 200


async def test_start_log_names_both_ports(caplog: pytest.LogCaptureFixture) -> None:
    """`mos demo` takes free ports when 4028/8080 are busy; only the REST port was logged (the cgminer one at
    DEBUG), so a user could not find the cgminer API."""
    with caplog.at_level(logging.INFO, logger="openmos.api"):
        async with serving(idle_agent()) as apis:
            assert apis.cgminer.port != 0 and apis.rest_port != 0
            said = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
            assert f"http://127.0.0.1:{apis.rest_port}" in said
            assert f"cgminer API on 127.0.0.1:{apis.cgminer.port}" in said


async def test_operator_cannot_change_auth_settings_or_allow_lists(tmp_path: Path) -> None:
    """The observed escalation: save a config pointing auth_file elsewhere and opening cgminer_allow."""
    config_path = tmp_path / "agent.toml"
    agent = idle_agent()
    agent.config.save(config_path)
    auth, admin_token = owner_store()
    auth.add_user("ops", "operator-password", Role.OPERATOR)
    ops = {"Authorization": f"Bearer {auth.login('ops', 'operator-password')}"}
    admin = {"Authorization": f"Bearer {admin_token}"}
    base = AgentConfig.load(config_path).model_dump(mode="json")
    async with asgi_client(create_app(DeviceView(agent), auth, config_path=config_path)) as client:
        for change in ({"auth_file": str(tmp_path / "mine.json")}, {"cgminer_allow": ["W:10.9.8.7/32"]},
                       {"allowed_hosts": ["evil.example"]}):
            body = {**base, "api": {**base["api"], **change}}
            r = await client.put("/api/v1/config", json=body, headers=ops)
            assert r.status_code == 403 and "admin" in r.json()["detail"], r.text
            assert "mine.json" not in config_path.read_text() and "10.9.8.7" not in config_path.read_text()
        body = {**base, "security": {**base["security"], "pubkey": str(tmp_path / "attacker.pem")}}
        assert (await client.put("/api/v1/config", json=body, headers=ops)).status_code == 403
        # Wildcards in two halves, or any network wider than a /24, are refused even for the admin.
        for wide in (["W:0.0.0.0/1", "W:128.0.0.0/1"], ["10.0.0.0/16"], ["fd00::/64"]):
            body = {**base, "api": {**base["api"], "cgminer_allow": wide}}
            r = await client.put("/api/v1/config", json=body, headers=admin)
            assert r.status_code == 422 and "cgminer_allow" in r.text
        # Operators keep what is theirs: pools. The admin may change the api section.
        body = {**base, "groups": [{"name": "main", "pools": [{"url": "stratum+tcp://127.0.0.1:2", "user": "y"}]}]}
        assert (await client.put("/api/v1/config", json=body, headers=ops)).status_code == 200
        body = {**body, "api": {**base["api"], "cgminer_allow": ["W:10.9.8.7/32"]}}
        assert (await client.put("/api/v1/config", json=body, headers=admin)).status_code == 200
        assert "10.9.8.7" in config_path.read_text()


async def test_config_put_refuses_infinite_and_absurd_targets(tmp_path: Path) -> None:
    """1e400 is valid JSON (it parses as inf): saved as a power target, the agent refused to start again."""
    config_path = tmp_path / "agent.toml"
    agent = idle_agent()
    agent.config.save(config_path)
    before = config_path.read_text()
    auth, admin_token = owner_store()
    admin = {"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"}
    base = AgentConfig.load(config_path).model_dump(mode="json")
    async with asgi_client(create_app(DeviceView(agent), auth, config_path=config_path)) as client:
        for field, value in (("power_w", "1e400"), ("power_w", "-1e400"), ("hashrate_ths", "1e300"),
                             ("power_w", "NaN"), ("manual_fan_pct", "Infinity")):
            performance = {k: v for k, v in base["performance"].items() if k != field}
            text = json.dumps({**base, "performance": performance})
            text = text.replace('"performance": {', f'"performance": {{"{field}": {value}, ', 1)
            r = await client.put("/api/v1/config?mode=save", content=text, headers=admin)
            assert r.status_code == 422 and field in r.text, (field, value, r.text)
            assert value not in r.text  # the error names the field, it does not echo the value
        assert config_path.read_text() == before
        AgentConfig.load(config_path)  # still loads: the agent can restart


async def test_login_guessing_is_throttled_per_account_and_per_client() -> None:
    auth, _ = owner_store()
    async with asgi_client(create_app(DeviceView(idle_agent()), auth), "203.0.113.7") as guesser:
        codes = [(await guesser.post("/api/v1/auth/login", json={"user": "admin", "password": f"guess-{i}"}))
                 for i in range(200)]
        assert sum(r.status_code == 401 for r in codes) <= 6  # the free attempts, then backoff
        blocked = codes[-1]
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
        # Even the right password waits out the backoff: guessing cannot race it.
        r = await guesser.post("/api/v1/auth/login", json={"user": "admin", "password": OWNER})
        assert r.status_code == 429
    async with asgi_client(create_app(DeviceView(idle_agent()), auth), "198.51.100.9") as other:
        # The account is locked for everyone for now (per-account limit)...
        assert (await other.post("/api/v1/auth/login", json={"user": "admin", "password": OWNER})).status_code \
            == 429
    # ... and one client spraying many accounts is limited per client.
    auth2, _ = owner_store()
    async with asgi_client(create_app(DeviceView(idle_agent()), auth2), "203.0.113.8") as sprayer:
        codes2 = [(await sprayer.post("/api/v1/auth/login", json={"user": f"user{i}", "password": "password-1"}))
                  .status_code for i in range(30)]
        assert codes2.count(401) <= 6 and codes2[-1] == 429


def test_backoff_doubles_and_is_bounded() -> None:
    now = [1000.0]
    throttle = LoginThrottle(free=2, base_s=1, max_s=8, max_entries=50, clock=lambda: now[0])
    waits = []
    for _ in range(8):
        throttle.failed("admin", "1.2.3.4")
        waits.append(throttle.retry_after("admin", "1.2.3.4"))
    assert waits == [0, 0, 1, 2, 4, 8, 8, 8]
    throttle.succeeded("admin", "1.2.3.4")
    assert throttle.retry_after("admin", "1.2.3.4") == 0
    for i in range(1000):  # a spray of names cannot grow memory without bound
        throttle.failed(f"u{i}", f"10.0.{i // 250}.{i % 250}")
    assert len(throttle._keys) <= 50


async def test_password_hashing_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """40 parallel guessers: every scrypt runs in a worker thread, the loop keeps serving, nothing hangs."""
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real_hash = auth_module._hash

    def spy(password: str, salt: bytes) -> bytes:
        threads.append(threading.get_ident())
        return real_hash(password, salt)

    monkeypatch.setattr(auth_module, "_hash", spy)
    auth, _ = owner_store()
    threads.clear()
    app = create_app(DeviceView(idle_agent()), auth)
    async with asgi_client(app) as client:
        guesses = [client.post("/api/v1/auth/login", json={"user": f"u{i}", "password": "wrong-password"})
                   for i in range(40)]
        reads = [client.get("/api/v1/pools") for _ in range(10)]
        results = await asyncio.gather(*guesses, *reads)
    assert all(r.status_code in (401, 429) for r in results[:40])
    assert all(r.status_code == 200 for r in results[40:])
    assert threads and loop_thread not in threads


async def test_huge_body_refused_before_parsing_and_before_auth() -> None:
    """The observed 52 MB login body: answered 413 at once from the declared length, nothing is read."""
    async with serving(idle_agent()) as apis:
        port = apis.rest_port
        head = (b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 52000000\r\n\r\n")
        reply = await raw_http(port, head, b'{"user":"' + b"A" * 4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"AAAA" not in reply
        # Without a declared length (chunked), the stream is cut at the limit.
        chunk = b"A" * 60000
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
        head = (b"PUT /api/v1/config HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nAuthorization: Bearer x\r\n\r\n")
        reply = await raw_http(port, head, body)
        assert reply.startswith((b"HTTP/1.1 413", b"HTTP/1.1 401", b"HTTP/1.1 403")), reply[:200]
        assert b"AAAA" not in reply
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.post("/api/v1/auth/setup", json={"password": OWNER})).status_code == 201
            token = (await client.post("/api/v1/auth/login", json={"user": "admin", "password": OWNER})).json()
            auth = {"Authorization": f"Bearer {token['token']}"}
            r = await client.put("/api/v1/config", content=b'{"x":"' + b"A" * 100_000 + b'"}', headers=auth)
            assert r.status_code == 413 and b"AAAA" not in r.content
            # Unauthenticated writes are refused before their body is parsed: broken JSON gets 401, not 422.
            r = await client.put("/api/v1/config", content=b"{not json", headers={"Content-Type": "application/json"})
            assert r.status_code == 401
            r = await client.post("/api/v1/pools", content=b"[[[[", headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401


async def test_error_replies_never_echo_the_input() -> None:
    auth, token = owner_store()
    marker = "ECHO" * 5000  # 20 kB, under the body limit
    async with asgi_client(create_app(DeviceView(idle_agent()), auth)) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for method, path, body in (("POST", "/api/v1/auth/login", {"user": marker, "password": 5}),
                                   ("POST", "/api/v1/auth/setup", {"password": marker, marker: 1}),
                                   ("POST", "/api/v1/pools", {"url": f"stratum+tcp://{marker}:1", "user": "u"}),
                                   ("POST", "/api/v1/pools", {"url": "stratum+tcp://h:1", "user": "u", marker: 1}),
                                   ("PUT", "/api/v1/performance", {"power_w": marker}),
                                   ("PUT", "/api/v1/config", {"groups": marker}),
                                   ("PUT", "/api/v1/config", {**POOL, marker: 1}),
                                   ("PUT", "/api/v1/config", {**POOL, "api": {"cgminer_allow": [marker]}})):
            r = await client.request(method, path, json=body, headers=headers)
            assert r.status_code in (401, 409, 422), (path, r.status_code)
            assert "ECHOECHO" not in r.text and len(r.content) < 4000, (path, r.text[:300])


async def test_dns_rebinding_host_refused_and_security_headers_present() -> None:
    auth, token = owner_store()
    async with asgi_client(create_app(DeviceView(idle_agent()), auth, allowed_hosts=["miner7.lan"])) as client:
        for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", ""):
            r = await client.get("/api/v1/status", headers={"Host": host})
            assert r.status_code == 421, host
        for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080", "10.0.0.5", "miner7.lan", "MINER7.LAN."):
            r = await client.get("/api/v1/pools", headers={"Host": host})
            assert r.status_code == 200, host
        page = await client.get("/")
        csp = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        r = await client.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        assert (await client.get("/docs")).status_code == 404  # the Swagger page would load a CDN's scripts


async def test_token_without_bearer_scheme_is_refused() -> None:
    auth, token = owner_store()
    async with asgi_client(create_app(DeviceView(idle_agent()), auth)) as client:
        for value in (token, f"Token {token}", f"Bearer  {token}", f"Bearer {token} extra", f"Basic {token}"):
            r = await client.post("/api/v1/actions/locate", headers={"Authorization": value})
            assert r.status_code == 401, value
        for value in (f"Bearer {token}", f"bearer {token}"):
            assert (await client.post("/api/v1/actions/locate", headers={"Authorization": value})).status_code == 200


async def test_live_streams_are_capped() -> None:
    async with serving(idle_agent()) as apis, httpx.AsyncClient(base_url=f"http://127.0.0.1:{apis.rest_port}",
                                                                timeout=30) as client:
        limit = apis.app.state.ctx.max_streams
        streams = []
        for _ in range(limit):
            cm = client.stream("GET", "/api/v1/stream", params={"interval": 5})
            resp = await cm.__aenter__()
            assert resp.status_code == 200
            streams.append(cm)
        r = await client.get("/api/v1/stream", params={"interval": 5})
        assert r.status_code == 503 and "Retry-After" in r.headers
        for cm in streams:
            await cm.__aexit__(None, None, None)
        ctx = apis.app.state.ctx
        for _ in range(400):  # the server notices the disconnects
            if ctx.streams == 0:
                break
            await asyncio.sleep(0.05)
        assert ctx.streams == 0
        async with client.stream("GET", "/api/v1/stream", params={"interval": 5}) as resp:
            assert resp.status_code == 200


async def test_pool_urls_are_validated_and_stored_normalised() -> None:
    agent = idle_agent()
    auth, token = owner_store()
    headers = {"Authorization": f"Bearer {token}"}
    async with asgi_client(create_app(DeviceView(agent), auth)) as client:
        r = await client.post("/api/v1/pools", json={"url": "STRATUM+TCP://Pool.Example.:3333", "user": "u"},
                              headers=headers)
        assert r.status_code == 201 and r.json()["url"] == "stratum+tcp://pool.example:3333"
        r = await client.post("/api/v1/pools", json={"url": "stratum+tls://[0:0::1]:4444", "user": "u"},
                              headers=headers)
        assert r.status_code == 201 and r.json()["url"] == "stratum+ssl://[::1]:4444"
        for bad in ("stratum+tcp://bad host:1", "stratum+tcp://a_b.example:1", "stratum+tcp://user:pw@h.example:1",
                    "stratum+tcp://h.example:1/path", "stratum+tcp://h.example:0", "stratum+tcp://300.1.1.1:1",
                    "stratum+tcp://-lead.example:1", "stratum+tcp://" + "a" * 64 + ".example:1",
                    "stratum+tcp://h.example:1\r\nX: y", "stratum+tcp://$(reboot):1"):
            r = await client.post("/api/v1/pools", json={"url": bad, "user": "u"}, headers=headers)
            assert r.status_code == 422, bad
    urls = [c.endpoint.url for c in agent.pools.connections()]
    assert urls == ["stratum+tcp://127.0.0.1:1", "stratum+tcp://pool.example:3333", "stratum+ssl://[::1]:4444"]


async def test_fleet_dashboard_login_is_throttled_too() -> None:
    """The fleet dashboard shares the accounts code: the same backoff, the same off-loop hashing."""
    from openmos.fleet.web.app import create_fleet_app

    auth, _ = owner_store()
    app = create_fleet_app(cast(Any, object()), auth)  # login touches no fleet state
    async with asgi_client(app, "203.0.113.50") as client:
        codes = [(await client.post("/api/v1/auth/login", json={"user": "admin", "password": f"guess-{i}"}))
                 .status_code for i in range(12)]
        assert codes.count(401) <= 6 and codes[-1] == 429
        r = await client.post("/api/v1/auth/login", json={"user": "admin", "password": OWNER})
        assert r.status_code == 429 and "Retry-After" in r.headers


async def test_not_found_replies_never_echo_the_path() -> None:
    """A 404 said "no hashboard 9999…" / "no pool 9999…" / "no request <script>…": the path came back."""
    from types import SimpleNamespace

    from openmos.fleet.web.app import create_fleet_app

    auth, token = owner_store()
    headers = {"Authorization": f"Bearer {token}"}
    number = "9" * 150  # a valid int that no index reaches, shorter than the 200-character reply cap
    async with asgi_client(create_app(DeviceView(idle_agent()), auth)) as client:
        for method, path, body in (("GET", f"/api/v1/hashboards/{number}/chips", None),
                                   ("GET", "/api/v1/hashboards/-1234567/chips", None),
                                   ("PATCH", f"/api/v1/pools/{number}", {"enabled": True}),
                                   ("DELETE", f"/api/v1/pools/{number}", None),
                                   ("POST", "/api/v1/pools", {"url": "stratum+tcp://h:1", "user": "u",
                                                              "group": int(number)}),
                                   ("GET", "/api/v1/hashboards/<script>alert(1)</script>/chips", None)):
            r = await client.request(method, path, json=body, headers=headers)
            assert r.status_code in (404, 422), (path, r.status_code, r.text[:200])
            assert "9999" not in r.text and "1234567" not in r.text and "<script>" not in r.text, r.text[:300]
    fleet = create_fleet_app(cast(Any, SimpleNamespace(controller=SimpleNamespace(requests={}))), auth)
    async with asgi_client(fleet) as client:
        for suffix in ("approve", "execute", "rollout"):
            for rid in ("<script>alert(1)</script>", number):
                r = await client.post(f"/api/fleet/requests/{rid}/{suffix}", headers=headers)
                assert r.status_code == 404, (suffix, r.status_code)
                assert "<script>" not in r.text and "9999" not in r.text, r.text[:300]
        r = await client.post("/api/fleet/enrollments/<script>", json={}, headers=headers)
        assert r.status_code == 422 and "<script>" not in r.text, r.text[:300]


async def test_performance_bounds_have_one_source() -> None:
    """``power_w`` 1e-300 used to pass the schema (gt=0, max 100,000) and be refused by the command as 'must be within
    [1, 1e+06]': two bounds that disagreed. Schema, agent config, REST answer and command now share the constants."""
    from openmos.control import SetTarget
    from openmos.control.commands import MAX_THS, MAX_WATTS, MIN_TARGET_THS, MIN_TARGET_W
    from openmos.miner.config import PerformanceConfig

    auth, token = owner_store()
    async with asgi_client(create_app(DeviceView(idle_agent()), auth)) as client:
        schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["PerformanceRequest"]
        power = next(v for v in schema["properties"]["power_w"]["anyOf"] if v.get("type") == "number")
        ths = next(v for v in schema["properties"]["hashrate_ths"]["anyOf"] if v.get("type") == "number")
        assert (power["minimum"], power["maximum"]) == (MIN_TARGET_W, MAX_WATTS)
        assert (ths["minimum"], ths["maximum"]) == (MIN_TARGET_THS, MAX_THS)
        headers = {"Authorization": f"Bearer {token}"}
        for body in ({"power_w": 1e-300}, {"power_w": 0.5}, {"power_w": MAX_WATTS * 1.001}, {"hashrate_ths": 1e-300}):
            r = await client.put("/api/v1/performance", json=body, headers=headers)
            assert r.status_code == 422, (body, r.text)
            assert "1e+06" not in r.text and "1000000" not in r.text, r.text
    for field, lo, hi in (("power_w", MIN_TARGET_W, MAX_WATTS), ("hashrate_ths", MIN_TARGET_THS, MAX_THS)):
        for edge in (lo, hi):  # what the schema admits, the command and the agent config admit too
            SetTarget(**{field: edge})
            PerformanceConfig.model_validate({field: edge})
        with pytest.raises(ValueError, match=r"within \["):
            SetTarget(**{field: hi * 1.001})
