"""REST API, metrics, SSE, the pyasic backend and the web page in a real browser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from openmos.api.auth import Role
from openmos.integrations.pyasic_miner import OpenMOSMiner

from api_stack import running_device
from helpers import wait_for

OUTPUT = Path(__file__).parents[1] / "test-output"
PASSWORD = "correct horse battery"


async def owner_token(client: httpx.AsyncClient) -> str:
    assert (await client.post("/api/v1/auth/setup", json={"user": "admin", "password": PASSWORD})).status_code == 201
    resp = await client.post("/api/v1/auth/login", json={"user": "admin", "password": PASSWORD})
    assert resp.status_code == 200
    return str(resp.json()["token"])


async def test_auth_rules_and_validation(tmp_path: Path) -> None:
    async with running_device(performance={"profile": "eco"}, auth_file=str(tmp_path / "auth.json")) as dev, \
            httpx.AsyncClient(base_url=dev.rest_url) as client:
        # No owner yet: there is no default password, and every write is refused.
        r = await client.post("/api/v1/actions/pause")
        assert r.status_code == 403 and "no owner account" in r.json()["detail"]
        assert (await client.post("/api/v1/auth/setup", json={"password": "short"})).status_code == 422
        token = await owner_token(client)
        assert (await client.post("/api/v1/auth/setup", json={"password": PASSWORD + "x"})).status_code == 409
        assert (await client.post("/api/v1/auth/login", json={"user": "admin", "password": "wrong"})).status_code \
            == 401
        # Writes without or with a bad token: 401.
        for headers in ({}, {"Authorization": "Bearer nonsense"}):
            r = await client.put("/api/v1/performance", json={"power_w": 3000}, headers=headers)
            assert r.status_code == 401, r.text
        auth = {"Authorization": f"Bearer {token}"}
        # Schema validation: 422 with messages that say what is wrong.
        r = await client.put("/api/v1/performance", json={"power_w": -5}, headers=auth)
        assert r.status_code == 422 and "greater than or equal to 1" in r.text
        r = await client.put("/api/v1/performance", json={"power_w": 3000, "profile": "eco"}, headers=auth)
        assert r.status_code == 422 and "exactly one" in r.text
        r = await client.post("/api/v1/pools", json={"url": "http://nope:1", "user": "x"}, headers=auth)
        assert r.status_code == 422 and "unsupported pool URL scheme" in r.text
        r = await client.post("/api/v1/pools", json={"url": "stratum+tcp://127.0.0.1:9", "user": "x", "bogus": 1},
                              headers=auth)
        assert r.status_code == 422 and "bogus" in r.text
        # Valid writes work and are audited.
        r = await client.put("/api/v1/performance", json={"power_w": 3000}, headers=auth)
        assert r.status_code == 200 and dev.agent.tuner is not None
        assert dev.agent.tuner.base_target.value == 3000
        r = await client.post("/api/v1/pools", json={"url": "stratum+tcp://127.0.0.1:9", "user": "b"}, headers=auth)
        assert r.status_code == 201 and len(dev.agent.pools.connections()) == 2
        assert (await client.patch("/api/v1/pools/1", json={"enabled": False}, headers=auth)).status_code == 200
        assert (await client.delete("/api/v1/pools/1", headers=auth)).status_code == 200
        assert (await client.delete("/api/v1/pools/0", headers=auth)).status_code == 409
        assert (await client.post("/api/v1/actions/pause", headers=auth)).status_code == 200 and dev.agent.paused
        assert (await client.post("/api/v1/actions/resume", headers=auth)).status_code == 200
        audit = (await client.get("/api/v1/audit", headers=auth)).json()
        paths = [a["path"] for a in audit]  # every authenticated write attempt, in order
        assert paths.index("/api/v1/performance") < paths.index("/api/v1/pools") < paths.index("/api/v1/actions/pause")
        assert all(a["user"] == "admin" for a in audit)
        # A read-only account may read, not write.
        dev.apis.auth.add_user("viewer", "viewer-password-1", Role.READONLY)
        ro = (await client.post("/api/v1/auth/login", json={"user": "viewer", "password": "viewer-password-1"})).json()
        r = await client.post("/api/v1/actions/pause", headers={"Authorization": f"Bearer {ro['token']}"})
        assert r.status_code == 403
        # The owner survives a restart of the API (stored hashed, not in clear).
        stored = (tmp_path / "auth.json").read_text()
        assert PASSWORD not in stored and "admin" in stored


async def test_reads_openapi_metrics_and_stream() -> None:
    async with running_device() as dev, httpx.AsyncClient(base_url=dev.rest_url) as client:
        schema = (await client.get("/openapi.json")).json()
        for path in ("/api/v1/status", "/api/v1/pools", "/api/v1/performance", "/api/v1/hashboards/{board}/chips",
                     "/api/v1/actions/{action}", "/api/v1/config"):
            assert path in schema["paths"]
        status = (await client.get("/api/v1/status")).json()
        assert status["device"]["hashrate_source"] == "modelled"
        assert status["pools"][0]["user"] == "api.s21"
        boards = (await client.get("/api/v1/hashboards")).json()
        assert len(boards) == 3 and boards[0]["chips"] == 108
        chips = (await client.get("/api/v1/hashboards/2/chips")).json()
        assert len(chips) == 108 and chips[0]["frequency_mhz"] > 0
        assert (await client.get("/api/v1/hashboards/7/chips")).status_code == 404
        config = (await client.get("/api/v1/config")).json()
        assert config["groups"][0]["pools"][0]["password"] == "***"
        metrics = (await client.get("/metrics")).text
        for name in ("openmos_hashrate_hashes_per_second", "openmos_power_watts", "openmos_temperature_celsius",
                     "openmos_fan_rpm", "openmos_shares_total", "openmos_board_hardware_errors_total"):
            assert name in metrics
        assert "\nopenmos_figures_modelled 1.0\n" in metrics  # a simulated S21: power and temperatures too
        async with client.stream("GET", "/api/v1/stream", params={"interval": 0.2}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = resp.aiter_lines()
            assert await anext(lines) == "event: status"
            data = json.loads((await anext(lines)).removeprefix("data: "))
            assert "hashrate_ths" in data


async def test_pyasic_backend_fills_minerdata() -> None:
    async with running_device(allow=["127.0.0.1/32"], performance={"profile": "eco"}) as dev:
        await wait_for(lambda: dev.agent.pools.groups[0].connections[0].counters.accepted >= 1, 60, "a share")
        miner = OpenMOSMiner("127.0.0.1", port=dev.cgminer_port)
        data = await miner.get_data()
        assert data.hashrate is not None and 100 < float(data.hashrate) < 300  # TH/s, modelled
        assert data.wattage is not None and 1500 < data.wattage < 4500
        assert data.wattage_limit == 2450
        assert data.expected_hashrate is not None and float(data.expected_hashrate) > 150
        assert len(data.hashboards) == 3 and all(b.chips == 108 for b in data.hashboards)
        assert all(b.temp is not None and b.chip_temp is not None for b in data.hashboards)
        assert len(data.fans) == 4 and all(f.speed and f.speed > 0 for f in data.fans)
        assert data.pools[0].user == "api.s21" and data.pools[0].active and data.pools[0].accepted >= 1
        assert data.fw_ver is not None and data.fw_ver.startswith("OpenMOS")
        assert data.is_mining
        assert await miner.set_power_limit(3100)
        assert dev.agent.tuner is not None and dev.agent.tuner.base_target.value == 3100
        assert await miner.stop_mining() and dev.agent.paused
        assert await miner.resume_mining() and not dev.agent.paused
        assert await miner.send_pools([(dev.pool.url, "renamed.worker")])
        assert [c.endpoint.user for c in dev.agent.pools.connections()] == ["renamed.worker"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it as root)")
async def test_web_page_shows_live_values_in_a_real_browser() -> None:
    """The page works under its own Content-Security-Policy (no eval, no inline code): waits use locators,
    which do not evaluate strings in the page, and any CSP violation the browser reports fails the test."""
    from playwright.async_api import async_playwright, expect

    OUTPUT.mkdir(exist_ok=True)
    async with running_device() as dev, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            violations: list[str] = []
            page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text
                    else None)
            await page.goto(dev.rest_url + "/")
            await expect(page.locator("#hashrate")).to_contain_text("TH/s", timeout=15000)
            await expect(page.locator("#heatmap rect")).to_have_count(324, timeout=15000)
            first = await page.text_content("#power")
            await expect(page.locator("#power")).not_to_have_text(first or "", timeout=15000)
            await expect(page.locator("#chart-power polyline")).to_have_count(1, timeout=15000)
            assert not violations, violations
            assert "OpenMOS" in (await page.text_content("#hardware") or "")
            assert await page.text_content("#pools tbody td:nth-child(3)") == "api.s21"
            await page.screenshot(path=str(OUTPUT / "web-page.png"), full_page=True)
        finally:
            await browser.close()
    assert (OUTPUT / "web-page.png").stat().st_size > 10_000
