"""Two sites, one device name: everything above the bus keys devices by (site, device id).

Attack: site B runs a device named like one of site A's and sends telemetry (lower power, a hashrate drop, a
foreign pool); site A's row on the dashboard API, its detail, its alerts and its store rows never change, and a
request naming a bare device id without a site is refused instead of reaching both."""

from __future__ import annotations

from pathlib import Path

import httpx

from openmos.fleet.web.app import create_fleet_app
from openmos.testbed.device import SimulatedFleetDevice
from test_fleet_security import plain_fleet
from test_fleet_service import accounts

from helpers import wait_for


async def test_a_device_named_like_another_sites_never_changes_its_row(tmp_path: Path) -> None:
    async with plain_fleet(tmp_path, {"north": ["miner-1"], "south": ["miner-1"]}) as (service, nodes):
        north, south = (n.device for n in nodes)
        assert isinstance(north, SimulatedFleetDevice) and isinstance(south, SimulatedFleetDevice)
        await wait_for(lambda: len(service.latest) == 2 and len(service.inventory) == 2, 20, "both sites' telemetry")
        auth, bearer = accounts()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_fleet_app(service, auth)),
                                     base_url="http://localhost") as c:
            rows = (await c.get("/api/fleet/devices")).json()
            assert sorted(r["id"] for r in rows) == ["north/miner-1", "south/miner-1"]
            north_before = service.latest["north", "miner-1"]["power_w"]
            # Site B's device changes: a third of its power, a foreign pool.
            south.target_w = south.target_w / 3
            south.pools = [{"url": "stratum+tcp://evil.example:3333", "user": "thief"}]
            await wait_for(lambda: service.latest["south", "miner-1"]["power_w"] < 0.5 * north_before, 20,
                           "site B's update")
            await wait_for(lambda: ("south", "miner-1", "hashrate") in service.alerts.active, 20,
                           "site B's hashrate alert")
            rows = {r["id"]: r for r in (await c.get("/api/fleet/devices")).json()}
            assert len(rows) == 2
            assert rows["north/miner-1"]["power_w"] == north_before
            assert rows["south/miner-1"]["power_w"] < 0.5 * north_before
            detail = (await c.get("/api/fleet/devices/north/miner-1")).json()
            assert detail["site"] == "north" and detail["power_w"] == north_before
            assert (await c.get("/api/fleet/devices/west/miner-1")).status_code == 404
            assert (await c.get("/api/fleet/devices/north/<script>")).status_code == 422
            alerts = (await c.get("/api/fleet/alerts")).json()["active"]
            assert {(a["site"], a["device"], a["kind"]) for a in alerts} >= {("south", "miner-1", "hashrate")}
            assert not [a for a in alerts if a["site"] == "north"]
            overview = (await c.get("/api/fleet/overview")).json()
            assert overview["sites"]["north"]["power_w"] == north_before and overview["online"] == 2
            # A bare id would reach both sites: refused; "south/miner-1" reaches only site B.
            bob = bearer("bob")
            body = {"action": "set_power", "args": {"watts": 1000}, "devices": ["miner-1"]}
            assert (await c.post("/api/fleet/requests", json=body, headers=bob)).status_code == 422
            body["devices"] = ["south/miner-1"]
            rid = (await c.post("/api/fleet/requests", json=body, headers=bob)).json()["request_id"]
            done = (await c.post(f"/api/fleet/requests/{rid}/execute", headers=bob)).json()
            assert list(done["results"]) == ["south/miner-1"] and done["results"]["south/miner-1"]["ok"]
            assert south.target_w == 1000 and north.target_w > 1000
        await wait_for(lambda: len(service.store.devices()) == 2, 20, "both inventory rows in the store")
        stored = {(d["site"], d["device"]): d for d in service.store.devices()}
        assert set(stored) == {("north", "miner-1"), ("south", "miner-1")}
