"""Approving enrollments from the fleet dashboard: admins only, the same registry call as `mos fleet approve`,
CSRF-safe (the token travels in the Authorization header, never in a cookie) and no device-supplied text ever
rendered as HTML.

Attacks: a cross-site form post (no bearer header, text/plain body), an operator or read-only user, a stale
fingerprint (the waiting key is not the one the admin compared), and a pending request whose device id is HTML
with a script (planted in the registry directly: the bus's own schema would already refuse it)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
import uvicorn

from openmos.base.net import free_local_port
from openmos.fleet.enroll import fingerprint
from openmos.fleet.envelope import DeviceKey
from openmos.fleet.node import DeviceNode
from openmos.fleet.web.app import create_fleet_app
from openmos.testbed.device import SimulatedFleetDevice
from test_fleet_security import plain_fleet
from test_fleet_service import accounts

from helpers import wait_for

CHROMIUM = shutil.which("chromium")
XSS = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


async def test_only_admins_approve_enrollments_through_the_registry(tmp_path: Path) -> None:
    async with plain_fleet(tmp_path, {"north": ["d0"]}) as (service, _):
        newcomer = DeviceNode(service.bus, "north", SimulatedFleetDevice("d9"), [])
        assert (await newcomer.enroll(timeout_s=10))["status"] == "pending"
        intruder_key = DeviceKey().public_b64
        assert service.registry.request("south", XSS, intruder_key) == "pending"
        auth, bearer = accounts()
        app = create_fleet_app(service, auth)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            assert (await c.get("/api/fleet/enrollments")).status_code == 401
            assert (await c.get("/api/fleet/enrollments", headers=bearer("bob"))).status_code == 403
            assert (await c.get("/api/fleet/enrollments", headers=bearer("eve"))).status_code == 403
            alice = bearer("alice")
            listed = await c.get("/api/fleet/enrollments", headers=alice)
            assert listed.status_code == 200 and listed.headers["content-type"] == "application/json"
            assert listed.headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in \
                listed.headers["content-security-policy"]
            pending = {p["id"]: p for p in listed.json()["pending"]}
            assert set(pending) == {"north/d9", f"south/{XSS}"}
            mine = pending["north/d9"]
            assert mine["fingerprint"] == fingerprint(newcomer.public_key) and mine["source"].startswith("fleet bus")
            assert 0 <= mine["age_s"] < 60
            decision = {"site": "north", "device": "d9", "fingerprint": mine["fingerprint"]}
            # A cross-site form post carries no Authorization header (cookies would not help: none is set).
            login = await c.post("/api/v1/auth/login", json={"user": "alice", "password": "alice-password-1"})
            assert "set-cookie" not in login.headers
            forged = await c.post("/api/fleet/enrollments/approve", content=str(decision).encode(),
                                  headers={"content-type": "text/plain", "origin": "http://evil.example"})
            assert forged.status_code == 401
            r = await c.post("/api/fleet/enrollments/approve", json=decision, headers=bearer("bob"))
            assert r.status_code == 403
            stale = {**decision, "fingerprint": fingerprint(DeviceKey().public_b64)}
            assert (await c.post("/api/fleet/enrollments/approve", json=stale, headers=alice)).status_code == 409
            assert not service.registry.is_enrolled("north", "d9")
            r = await c.post("/api/fleet/enrollments/approve", json=decision, headers=alice)
            assert r.status_code == 200 and r.json() == {"state": "enrolled"}
            assert service.registry.is_enrolled("north", "d9")
            assert (await newcomer.enroll(timeout_s=10))["status"] == "enrolled"  # pinned: its key is believed
            assert (await c.post("/api/fleet/enrollments/approve", json=decision, headers=alice)).status_code == 404
            bad = {"site": "south", "device": XSS, "fingerprint": fingerprint(intruder_key)}
            r = await c.post("/api/fleet/enrollments/reject", json=bad, headers=alice)
            assert r.status_code == 200 and XSS not in r.text
            assert service.registry.pending == {} and not service.registry.is_enrolled("south", XSS)
        audit = [(e["who"], e["what"]) for e in service.controller.audit_log()]
        assert ("alice", "enrollment_approve") in audit and ("alice", "enrollment_reject") in audit


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it as root)")
async def test_enrollment_approval_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    async with plain_fleet(tmp_path, {"north": ["d0"]}) as (service, _):
        newcomer = DeviceNode(service.bus, "north", SimulatedFleetDevice("d9"), [])
        assert (await newcomer.enroll(timeout_s=10))["status"] == "pending"
        service.registry.request("south", XSS, DeviceKey().public_b64)
        auth, _ = accounts()
        port = free_local_port()
        server = uvicorn.Server(uvicorn.Config(create_fleet_app(service, auth), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve())
        try:
            await wait_for(lambda: server.started, 20, "the dashboard")
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync"])
                try:
                    page = await browser.new_page()
                    await page.goto(f"http://127.0.0.1:{port}/")
                    await page.fill("#user", "alice")
                    await page.fill("#password", "alice-password-1")
                    await page.click("#login button")
                    rows = "n => document.querySelectorAll('#enrollments tbody tr').length === n"
                    await page.wait_for_function(rows, arg=2)
                    cells = await page.eval_on_selector_all(
                        "#enrollments tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
                    assert [XSS, "south"] in [c[:2] for c in cells]  # shown as text, exactly as sent
                    row = next(c for c in cells if c[0] == "d9")
                    assert row[2] == fingerprint(newcomer.public_key) and row[3].startswith("fleet bus")
                    assert await page.evaluate("window.pwned") is None
                    assert await page.locator("#enrollments img, #enrollments script").count() == 0
                    assert await page.evaluate("document.cookie") == ""
                    await page.click('#enrollments tr[data-device="north/d9"] button.approve')
                    await page.wait_for_function(rows, arg=1)
                    assert service.registry.is_enrolled("north", "d9")
                    assert await page.evaluate("window.pwned") is None
                finally:
                    await browser.close()
        finally:
            server.should_exit = True
            await task
