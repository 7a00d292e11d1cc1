"""Fleet service end to end: telemetry into the store, alerts with a webhook, the dashboard API and page,
and `mos fleet scan` on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import uvicorn
from aiohttp import web

from openmos.api.auth import AuthStore, Role
from openmos.base.net import free_local_port
from openmos.cli.main import main
from openmos.fleet.alerts import AlertRules
from openmos.fleet.bus import BusConfig
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.node import DeviceHost, DeviceNode
from openmos.fleet.service import FleetService
from openmos.fleet.web.app import create_fleet_app
from openmos.security.signing import generate_keypair
from openmos.testbed.site import FleetSimSite

from helpers import wait_for

OUTPUT = Path(__file__).parents[1] / "test-output"
CHROMIUM = shutil.which("chromium")



async def start_site(tmp: Path, miners: int, webhooks: list[str] | None = None, stepping: bool = True
                     ) -> tuple[FleetService, FleetSimSite, list[DeviceNode]]:
    generate_keypair(tmp / "fleet.pem", tmp / "fleet.pub")
    service = FleetService(BusConfig(listen=[f"tcp/127.0.0.1:{free_local_port()}"]), f"sqlite:///{tmp / 'fleet.db'}",
                           (tmp / "fleet.pem").read_bytes(), tmp / "audit.jsonl",
                           rules=AlertRules(max_temp_c=75.0), webhooks=webhooks, inventory_interval_s=1,
                           flush_interval_s=0.3, registry=EnrollmentRegistry(None))
    await service.start()
    site = FleetSimSite(miners, per_container=10)
    if stepping:  # without stepping, a test sets the modelled figures itself
        await site.start(step_s=0.5)
    # Every device of the site in this process: one host, one queryable and one subscription for all of them.
    host = DeviceHost(service.bus, site.site)
    nodes = [DeviceNode(service.bus, site.site, w, [(tmp / "fleet.pub").read_bytes()], interval_s=0.5)
             for w in site.workers]
    for node in nodes:
        host.add(node)
        service.registry.pin(site.site, node.device.device_id, node.public_key)
    await host.start()
    return service, site, nodes


async def stop_site(service: FleetService, site: FleetSimSite, nodes: list[DeviceNode]) -> None:
    if nodes and nodes[0].host is not None:
        await nodes[0].host.stop()
    await site.stop()
    await service.stop()


async def test_telemetry_store_alerts_and_webhook(tmp_path: Path) -> None:
    hooks: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        hooks.append(await request.json())
        return web.json_response({})

    app = web.Application()
    app.add_routes([web.post("/hook", hook)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_local_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    service, site, nodes = await start_site(tmp_path, 20, webhooks=[f"http://127.0.0.1:{port}/hook"], stepping=False)
    try:
        await wait_for(lambda: len(service.inventory) == 20 and len(service.latest) == 20, 20, "all devices")
        overview = service.overview()
        assert overview["online"] == 20 and overview["modelled"] and 3.5 < overview["hashrate_ths"] / 1000 < 4.5
        assert len(service.store.devices(container="c01")) == 10
        site.hottest[3] = 90.0  # one miner overheats (environment)
        await wait_for(lambda: ("sim-site", "sim-00003", "temperature") in service.alerts.active, 10,
                       "a temperature alert")
        await wait_for(lambda: bool(hooks), 10, "the webhook")
        assert hooks[0]["raised"][0]["device"] == "sim-00003"  # type: ignore[index]
        await wait_for(lambda: service.store.rollup(1e12) > 0, 5, "rollups")
    finally:
        await stop_site(service, site, nodes)
        await runner.cleanup()


def accounts() -> tuple[AuthStore, Callable[[str], dict[str, str]]]:
    """alice (admin), bob and carol (operators), eve (read-only); ``bearer(user)`` logs one in."""
    auth = AuthStore(None)
    auth.setup_owner("alice", "alice-password-1")
    for user, role in (("bob", Role.OPERATOR), ("carol", Role.OPERATOR), ("eve", Role.READONLY)):
        auth.add_user(user, f"{user}-password-12", role)
    passwords = {"alice": "alice-password-1"}

    def bearer(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {auth.login(user, passwords.get(user, f'{user}-password-12'))}"}

    return auth, bearer


async def test_dashboard_api_roles_and_approvals(tmp_path: Path) -> None:
    service, site, nodes = await start_site(tmp_path, 10)
    auth, bearer = accounts()
    app = create_fleet_app(service, auth)
    try:
        await wait_for(lambda: len(service.inventory) == 10, 20, "inventory")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            alice, bob, eve = bearer("alice"), bearer("bob"), bearer("eve")
            assert (await c.get("/api/fleet/overview")).json()["devices"] == 10
            assert len((await c.get("/api/fleet/devices", params={"q": "sim-0000"})).json()) == 10
            body = {"action": "reboot", "site": "sim-site"}
            assert (await c.post("/api/fleet/requests", json=body)).status_code == 401
            assert (await c.post("/api/fleet/requests", json=body, headers=eve)).status_code == 403
            assert (await c.post("/api/fleet/requests", json={"action": "format"}, headers=alice)).status_code == 422
            rid = (await c.post("/api/fleet/requests", json=body, headers=alice)).json()["request_id"]
            assert (await c.post(f"/api/fleet/requests/{rid}/execute", headers=alice)).status_code == 409
            assert (await c.post(f"/api/fleet/requests/{rid}/approve", headers=alice)).status_code == 409
            assert (await c.post(f"/api/fleet/requests/{rid}/approve", headers=bob)).status_code == 200
            assert (await c.post(f"/api/fleet/requests/{rid}/execute", headers=alice)).status_code == 409  # 1 of 2
            carol = bearer("carol")
            assert (await c.post(f"/api/fleet/requests/{rid}/approve", headers=carol)).status_code == 200
            done = (await c.post(f"/api/fleet/requests/{rid}/execute", headers=alice)).json()
            assert len(done["results"]) == 10 and all(r["ok"] for r in done["results"].values())
            power = (await c.post("/api/fleet/requests", json={"action": "set_power", "args": {"watts": 1750},
                                                                "devices": ["sim-site/sim-00001"]}, headers=bob)).json()
            assert power["state"] == "ready"
            await c.post(f"/api/fleet/requests/{power['request_id']}/execute", headers=bob)
            await asyncio.sleep(2.5)
            latest = service.latest
            assert latest["sim-site", "sim-00001"]["power_w"] < 0.7 * latest["sim-site", "sim-00002"]["power_w"]
    finally:
        await stop_site(service, site, nodes)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it as root)")
async def test_dashboard_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    OUTPUT.mkdir(exist_ok=True)
    service, site, nodes = await start_site(tmp_path, 60)
    port = free_local_port()
    server = uvicorn.Server(uvicorn.Config(create_fleet_app(service, AuthStore(None)), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: len(service.latest) == 60 and len(service.inventory) == 60, 20, "telemetry")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            await page.goto(f"http://127.0.0.1:{port}/")
            await page.wait_for_function("() => document.getElementById('online').textContent === '60 / 60'")
            await page.wait_for_function("() => document.querySelectorAll('#heatmap rect').length === 60")
            await page.wait_for_function("() => document.querySelectorAll('#devices tbody tr').length === 60")
            await page.fill("#filter", "sim-0001")
            await page.wait_for_function("() => document.querySelectorAll('#devices tbody tr').length === 10")
            assert "PH/s" in (await page.text_content("#hashrate") or "")
            await page.screenshot(path=str(OUTPUT / "fleet-dashboard.png"), full_page=True)
            await browser.close()
    finally:
        server.should_exit = True
        await task
        await stop_site(service, site, nodes)


async def test_fleet_scan_finds_the_simulated_miners(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from openmos.testbed.farm import serve

    servers = await serve(12)
    try:
        db = tmp_path / "scan.db"
        code = await asyncio.to_thread(main, ["fleet", "scan", "127.1.0.0/28", "--timeout", "1",
                                              "--store", f"sqlite:///{db}"])
        assert code == 0
    finally:
        for s in servers:
            await s.stop()
    out = capsys.readouterr().out
    assert "12 miner(s) on 127.1.0.0/28" in out
    from openmos.fleet.store import FleetStore

    assert len(FleetStore(f"sqlite:///{db}").devices()) == 12
    assert json.dumps(out)  # printable


def test_scan_refuses_huge_networks() -> None:
    assert main(["fleet", "scan", "10.0.0.0/8"]) == 2


@pytest.mark.parametrize("option", [["--concurrency", "0"], ["--port", "99999"], ["--port", "0"],
                                    ["--timeout", "nan"], ["--timeout", "-1"], ["--timeout", "inf"]])
def test_scan_refuses_absurd_options(option: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--concurrency 0 waited for ever; --port 99999 ended in an OverflowError traceback; --timeout nan/-1 found
    nothing at once."""
    assert main(["fleet", "scan", "127.0.0.1/32", *option]) == 2
    assert f"{option[0]} must be" in capsys.readouterr().err


async def test_dashboard_staged_rollout_with_progress(tmp_path: Path) -> None:
    service, site, nodes = await start_site(tmp_path, 12)
    auth, bearer = accounts()
    app = create_fleet_app(service, auth)
    try:
        await wait_for(lambda: len(service.inventory) == 12, 20, "inventory")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            alice = bearer("alice")
            rid = (await c.post("/api/fleet/requests", json={"action": "install", "args": {"version": "openmos 0.3.0"},
                                                              "site": "sim-site"}, headers=alice)).json()["request_id"]
            assert (await c.post(f"/api/fleet/requests/{rid}/rollout", headers=alice)).status_code == 409
            await c.post(f"/api/fleet/requests/{rid}/approve", headers=bearer("bob"))
            await c.post(f"/api/fleet/requests/{rid}/approve", headers=bearer("carol"))
            started = await c.post(f"/api/fleet/requests/{rid}/rollout", params={"soak_s": 0.2}, headers=alice)
            assert started.status_code == 202
            for _ in range(100):
                state = (await c.get("/api/fleet/rollouts")).json()[0]
                if state["done"]:
                    break
                await asyncio.sleep(0.1)
            assert state["done"] and not state["halted"] and len(state["updated"]) == 12
            assert state["progress"] == 1.0 and len(state["messages"]) == 3  # canary, 10 %, rest
            assert all(fw == "openmos 0.3.0" for fw in site.firmware)
    finally:
        await stop_site(service, site, nodes)


async def test_openmos_agent_installs_a_signed_bundle_over_the_bus(tmp_path: Path) -> None:
    """A real agent on the bus verifies the signed bundle against its own root of trust before installing."""
    import io
    import tarfile

    from openmos.fleet.control import FleetController, TargetQuery
    from openmos.fleet.rollout import verified_package
    from openmos.fleet.workers.openmos import AgentWorker
    from openmos.hw.cpu import CpuHardware
    from openmos.miner import AgentConfig, MiningAgent
    from openmos.security.release import ReleaseRepository, generate_keys

    generate_keys(tmp_path / "release-keys")
    repo = ReleaseRepository(tmp_path / "repo", tmp_path / "release-keys")
    root = repo.init()
    bundle = tmp_path / "openmos-0.2.0.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        info = tarfile.TarInfo("bin/openmos-agent")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"agent"))
    repo.publish(bundle, custom={"version": "0.2.0"})
    repo_url = f"file://{tmp_path / 'repo'}"
    package = verified_package(repo_url, root.read_bytes(), bundle.name, tmp_path / "controller-state")
    assert package["version"] == "0.2.0" and len(package["sha256"]) == 64
    config = AgentConfig.from_dict({"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "x"}]}],
                                    "update": {"repo": repo_url, "root_of_trust": str(root),
                                               "state_dir": str(tmp_path / "device")}})
    worker = AgentWorker(MiningAgent(config, CpuHardware()), "agent-1", {"rack": "r1"})
    generate_keypair(tmp_path / "fleet.pem", tmp_path / "fleet.pub")
    from openmos.fleet.bus import FleetBus

    bus = FleetBus(BusConfig(listen=[f"tcp/127.0.0.1:{free_local_port()}"]))
    await bus.open()
    node = DeviceNode(bus, "lab", worker, [(tmp_path / "fleet.pub").read_bytes()])
    await node.start()
    registry = EnrollmentRegistry(None)
    registry.pin("lab", "agent-1", node.public_key)
    try:
        ctl = FleetController(bus, (tmp_path / "fleet.pem").read_bytes(), tmp_path / "audit.jsonl", approvals_needed=1,
                              registry=registry)
        req = ctl.request("install", {"version": "0.2.0", **package}, TargetQuery(devices=("agent-1",)), "alice")
        ctl.approve(req.request_id, "bob")
        result = (await ctl.execute(req.request_id, "alice"))["lab/agent-1"]
        # Verified and unpacked, but its "agent" is not a program: the health gate keeps slot a.
        assert result["ok"] and result["active_slot"] == "a", result
        assert "no executable bin/openmos-agent" in result["health"], result
        assert (tmp_path / "device" / "slots" / "b" / "bin" / "openmos-agent").read_bytes() == b"agent"
        # The scanner is callable fleet-wide: without a configured scan root the agent says so.
        scan = ctl.request("scan", {}, TargetQuery(devices=("agent-1",)), "alice")
        reply = (await ctl.execute(scan.request_id, "alice"))["lab/agent-1"]
        assert not reply["ok"] and "no scan configured" in reply["error"]
        # A bundle that is not in the signed repository is refused by the device itself.
        bad = ctl.request("install", {"version": "6.6.6", "target": "evil.tar.gz"}, TargetQuery(devices=("agent-1",)),
                          "alice")
        ctl.approve(bad.request_id, "bob")
        refused = (await ctl.execute(bad.request_id, "alice"))["lab/agent-1"]
        assert not refused["ok"] and "not a signed" in refused["error"]
    finally:
        await node.stop()
        await bus.close()


async def test_site_curtail_fast_path_over_the_bus(tmp_path: Path) -> None:
    """One signed publication reaches every device of the site; each acknowledges; power follows."""
    service, site, nodes = await start_site(tmp_path, 100)
    try:
        await wait_for(lambda: len(service.latest) == 100, 20, "telemetry")
        before = float(site.watts.sum())
        devices = {w.device_id for w in site.workers}
        acked, seconds = await service.controller.curtail_site(site.site, 0.5, devices, "grid-operator",
                                                                  timeout_s=60)
        # How fast is measured by benchmarks/curtail.py; here: every device acknowledged, none missing.
        assert acked == devices and seconds >= 0
        assert await service.controller.last_broadcast[site.site].wait_applied(30)
        # the stepper applies the new frequencies
        await wait_for(lambda: float(site.watts.sum()) < 0.65 * before, 30, "site power following the curtail")
        # A forged curtail (not signed by the fleet key) is ignored by every device.
        from openmos.security.signing import sign_document

        generate_keypair(tmp_path / "evil.pem", tmp_path / "evil.pub")
        forged = sign_document({"device": "*", "action": "curtail", "args": {"fraction": 0.0},
                                "issued_at": time.time(), "nonce": "x1"},
                               (tmp_path / "evil.pem").read_bytes())
        service.bus.publish(f"openmos/{site.site}/site/curtail", forged)
        await asyncio.sleep(1.5)
        assert float(site.watts.sum()) > 0.3 * before and all(n.refused for n in nodes)
        assert any(e["what"] == "curtail" for e in service.controller.audit_log())
    finally:
        await stop_site(service, site, nodes)


async def test_an_approved_request_runs_once(tmp_path: Path) -> None:
    """Replays of an approved action through the dashboard: a second execute (a double click) ran every device's
    command again, a late approval of a done request set it back to "ready" (one more vote re-ran it), and two
    rollout POSTs started two rollouts of one install. Hostile soak/days figures (NaN, inf, <0) were accepted."""
    service, site, nodes = await start_site(tmp_path, 3, stepping=False)
    auth, bearer = accounts()
    app = create_fleet_app(service, auth)
    try:
        await wait_for(lambda: len(service.inventory) == 3, 20, "inventory")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            alice, bob = bearer("alice"), bearer("bob")
            rid = (await c.post("/api/fleet/requests", json={"action": "locate", "args": {"seconds": 1},
                                                              "site": "sim-site"}, headers=alice)).json()["request_id"]
            await c.post(f"/api/fleet/requests/{rid}/approve", headers=bob)
            await c.post(f"/api/fleet/requests/{rid}/approve", headers=bearer("carol"))
            first, second = await asyncio.gather(c.post(f"/api/fleet/requests/{rid}/execute", headers=alice),
                                                 c.post(f"/api/fleet/requests/{rid}/execute", headers=alice))
            assert sorted((first.status_code, second.status_code)) == [200, 409], (first.text, second.text)
            late = await c.post(f"/api/fleet/requests/{rid}/approve", headers=bearer("eve"))
            assert late.status_code in (403, 409)  # eve is read-only; an operator's late vote is refused below
            service.controller.requests[rid].approvals.remove("carol")
            assert (await c.post(f"/api/fleet/requests/{rid}/approve", headers=bearer("carol"))).status_code == 409
            assert (await c.post(f"/api/fleet/requests/{rid}/execute", headers=alice)).status_code == 409
            assert service.controller.requests[rid].state == "done"

            rid = (await c.post("/api/fleet/requests", json={"action": "install", "args": {"version": "openmos 0.3.0"},
                                                              "site": "sim-site"}, headers=alice)).json()["request_id"]
            await c.post(f"/api/fleet/requests/{rid}/approve", headers=bob)
            await c.post(f"/api/fleet/requests/{rid}/approve", headers=bearer("carol"))
            for bad in ("nan", "inf", "-1", "1e400"):
                r = await c.post(f"/api/fleet/requests/{rid}/rollout", params={"soak_s": bad}, headers=alice)
                assert r.status_code == 422 and bad not in r.text, (bad, r.text)
                assert (await c.get("/api/fleet/series", params={"days": bad})).status_code == 422
            started = [await c.post(f"/api/fleet/requests/{rid}/rollout", params={"soak_s": 0}, headers=alice)
                       for _ in range(2)]
            assert [r.status_code for r in started] == [202, 409]
            await wait_for(lambda: all(s["done"] for s in app.state.rollouts.values()), 60, "rollout")
            assert len(app.state.rollouts) == 1
    finally:
        await stop_site(service, site, nodes)


async def test_an_operator_flood_of_requests_is_bounded(tmp_path: Path) -> None:
    """3000 POSTs of 60 KB args held 3000 requests and +1.1 GB of RSS (and 205 MB of audit log) for ever:
    args are capped at 16 KB, open requests at MAX_REQUESTS (then 429 with a clear reason), and finished ones
    are forgotten oldest first."""
    from openmos.fleet.control import MAX_REQUESTS
    from openmos.fleet.web.app import MAX_ARGS_BYTES

    service, site, nodes = await start_site(tmp_path, 1, stepping=False)
    auth, bearer = accounts()
    app = create_fleet_app(service, auth)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            bob = bearer("bob")
            big = {"k": "x" * (MAX_ARGS_BYTES + 1)}
            r = await c.post("/api/fleet/requests", json={"action": "reboot", "args": big, "site": "s"}, headers=bob)
            assert r.status_code == 422 and "xxxx" not in r.text
            codes = [(await c.post("/api/fleet/requests", json={"action": "reboot", "args": {"n": i}, "site": "s"},
                                   headers=bob)).status_code for i in range(MAX_REQUESTS + 3)]
            assert codes == [201] * MAX_REQUESTS + [429] * 3
            refused = await c.post("/api/fleet/requests", json={"action": "reboot", "site": "s"}, headers=bob)
            assert "still open" in refused.json()["detail"]
            for req in list(service.controller.requests.values())[:10]:
                req.state = "done"
            for _ in range(10):
                r = await c.post("/api/fleet/requests", json={"action": "reboot", "site": "s"}, headers=bob)
                assert r.status_code == 201
            assert len(service.controller.requests) == MAX_REQUESTS
            assert all(r.state != "done" for r in service.controller.requests.values())

    finally:
        await stop_site(service, site, nodes)


async def test_the_open_request_list_masks_pool_passwords(tmp_path: Path) -> None:
    """GET /api/fleet/requests needs no login (the dashboard's reads are open on the LAN) and listed set_pools
    args verbatim, pool passwords included; the device API masks them ("***") and so does the fleet now."""
    service, site, nodes = await start_site(tmp_path, 1, stepping=False)
    auth, bearer = accounts()
    app = create_fleet_app(service, auth)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            pools = [{"url": "stratum+tcp://127.0.0.1:3333", "user": "w", "password": "hunter2-secret"}, "odd"]
            r = await c.post("/api/fleet/requests", json={"action": "set_pools", "args": {"pools": pools},
                                                           "site": "s"}, headers=bearer("bob"))
            assert r.status_code == 201
            listed = await c.get("/api/fleet/requests")
            assert listed.status_code == 200 and "hunter2" not in listed.text
            assert listed.json()[0]["args"]["pools"] == [{**pools[0], "password": "***"}, "odd"]
            rid = r.json()["request_id"]
            assert service.controller.requests[rid].args["pools"][0]["password"] == "hunter2-secret"  # still sent
    finally:
        await stop_site(service, site, nodes)
