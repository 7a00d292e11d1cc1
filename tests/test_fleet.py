"""Fleet bus over eclipse-zenoh on loopback: peers without a broker, signed commands, approvals, rollout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from openmos.base.net import free_local_port
from openmos.fleet import keys
from openmos.fleet.bus import BusConfig, FleetBus
from openmos.fleet.control import ApprovalError, FleetController, TargetQuery
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.node import DeviceNode
from openmos.fleet.rollout import plan_cohorts, rollout
from openmos.security.signing import generate_keypair, sign_document
from openmos.testbed.device import SimulatedFleetDevice

from helpers import wait_for


@pytest.fixture
def fleet_keys(tmp_path: Path) -> tuple[bytes, bytes]:
    generate_keypair(tmp_path / "fleet.pem", tmp_path / "fleet.pub")
    return (tmp_path / "fleet.pem").read_bytes(), (tmp_path / "fleet.pub").read_bytes()


@asynccontextmanager
async def two_sites(public: bytes, devices_a: list[SimulatedFleetDevice], devices_b: list[SimulatedFleetDevice]
                    ) -> AsyncIterator[tuple[FleetBus, FleetBus, EnrollmentRegistry]]:
    port_a, port_b = free_local_port(), free_local_port()
    bus_a = FleetBus(BusConfig(listen=[f"tcp/127.0.0.1:{port_a}"]))
    bus_b = FleetBus(BusConfig(listen=[f"tcp/127.0.0.1:{port_b}"], connect=[f"tcp/127.0.0.1:{port_a}"]))
    await bus_a.open()
    await bus_b.open()
    nodes = [DeviceNode(bus_a, "north", d, [public], interval_s=0.5) for d in devices_a] + \
            [DeviceNode(bus_b, "south", d, [public], interval_s=0.5) for d in devices_b]
    registry = EnrollmentRegistry(None)
    for node in nodes:
        await node.start()
        registry.pin(node.site, node.device.device_id, node.public_key)
    deadline = time.monotonic() + 20  # declarations reach the other peer asynchronously
    for bus in (bus_a, bus_b):
        while (len(await bus.query(f"{keys.ROOT}/*/dev/*/inventory", timeout_s=2)) < len(nodes)
               and time.monotonic() < deadline):
            await asyncio.sleep(0.1)
    try:
        yield bus_a, bus_b, registry
    finally:
        for node in nodes:
            await node.stop()
        await bus_b.close()
        await bus_a.close()


async def inventory_of(ctl: FleetController, expected: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while len(found := await ctl.inventory()) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return found


async def test_two_peers_see_each_others_devices_without_a_broker(fleet_keys: tuple[bytes, bytes],
                                                                   tmp_path: Path) -> None:
    a = [SimulatedFleetDevice("a1"), SimulatedFleetDevice("a2", model="s19jpro")]
    b = [SimulatedFleetDevice("b1", model="s21xp")]
    async with two_sites(fleet_keys[1], a, b) as (bus_a, bus_b, registry):
        seen_by_a = FleetController(bus_a, fleet_keys[0], tmp_path / "audit-a.jsonl", registry=registry)
        seen_by_b = FleetController(bus_b, fleet_keys[0], tmp_path / "audit-b.jsonl", registry=registry)
        inv_a = await inventory_of(seen_by_a, 3)  # declarations reach the other peer asynchronously
        inv_b = await inventory_of(seen_by_b, 3)
        assert [d["device"] for d in inv_a] == [d["device"] for d in inv_b] == ["a1", "a2", "b1"]
        assert {d["site"] for d in inv_a} == {"north", "south"}
        telemetry: dict[str, dict[str, object]] = {}
        bus_b.subscribe(f"{keys.ROOT}/*/dev/*/telemetry", lambda k, doc: telemetry.__setitem__(k, doc))
        await wait_for(lambda: len(telemetry) == 3, 10, "telemetry from all three devices")
        assert telemetry[keys.telemetry("north", "a2")]["signed"]["body"]["modelled"] is True  # type: ignore[index]


async def test_commands_must_be_signed_fresh_and_unique(fleet_keys: tuple[bytes, bytes], tmp_path: Path) -> None:
    dev = SimulatedFleetDevice("a1")
    other_key = tmp_path / "other.pem"
    generate_keypair(other_key, tmp_path / "other.pub")
    async with two_sites(fleet_keys[1], [dev], []) as (_, bus_b, _registry):
        key = keys.command("north", "a1", "pause")
        def body(replies: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
            result: dict[str, Any] = replies[0][1]["signed"]["body"]
            return result

        cmd = {"site": "north", "device": "a1", "action": "pause"}
        unsigned = await bus_b.query(key, cmd)
        forged = await bus_b.query(key, sign_document({**cmd, "issued_at": time.time(), "nonce": "nonce-01"},
                                                      other_key.read_bytes()))
        stale = await bus_b.query(key, sign_document({**cmd, "issued_at": 0, "nonce": "nonce-02"}, fleet_keys[0]))
        assert all(not body(r)["ok"] for r in (unsigned, forged, stale))
        assert not dev.paused
        good = sign_document({**cmd, "issued_at": time.time(), "nonce": "nonce-03"}, fleet_keys[0])
        assert body(await bus_b.query(key, good))["ok"] and dev.paused
        replay = await bus_b.query(key, good)
        assert not body(replay)["ok"] and "replay" in body(replay)["error"]


async def test_unapproved_dangerous_action_does_not_run(fleet_keys: tuple[bytes, bytes], tmp_path: Path) -> None:
    devs = [SimulatedFleetDevice(f"a{i}", tags={"container": "c1" if i < 2 else "c2"}) for i in range(3)]
    async with two_sites(fleet_keys[1], devs, []) as (_, bus_b, registry):
        ctl = FleetController(bus_b, fleet_keys[0], tmp_path / "audit.jsonl", approvals_needed=2,
                              registry=registry)
        new_pools = [{"url": "stratum+tcp://10.0.0.9:3333", "user": "new.worker"}]
        req = ctl.request("set_pools", {"pools": new_pools}, TargetQuery(tags={"container": "c1"}), "alice")
        with pytest.raises(ApprovalError):
            await ctl.execute(req.request_id, "alice")
        with pytest.raises(ApprovalError, match="own action"):
            ctl.approve(req.request_id, "alice")
        ctl.approve(req.request_id, "bob")
        with pytest.raises(ApprovalError):
            await ctl.execute(req.request_id, "alice")
        assert all(d.pools[0]["user"] == "site.worker" for d in devs)  # nothing ran
        ctl.approve(req.request_id, "carol")
        results = await ctl.execute(req.request_id, "alice")
        assert set(results) == {"north/a0", "north/a1"} and all(r["ok"] for r in results.values())
        assert [d.pools[0]["user"] for d in devs] == ["new.worker", "new.worker", "site.worker"]
        # A harmless action needs no vote; per-target results come back.
        quick = ctl.request("set_power", {"watts": 2450}, TargetQuery(site="north"), "alice")
        assert len(await ctl.execute(quick.request_id, "alice")) == 3
        log = [(e["who"], e["what"]) for e in ctl.audit_log()]
        assert ("alice", "refused") in log and ("bob", "approve") in log and ("alice", "execute") in log


def test_cohort_plan() -> None:
    devices = [f"d{i}" for i in range(50)]
    cohorts = plan_cohorts(devices)
    assert [len(c) for c in cohorts] == [1, 4, 45]
    assert [d for c in cohorts for d in c] == devices


async def test_rollout_with_failing_canary_halts_and_rolls_back(fleet_keys: tuple[bytes, bytes],
                                                                tmp_path: Path) -> None:
    devs = [SimulatedFleetDevice(f"a{i:02d}", bad_firmware=frozenset({"openmos 0.2.0-bad"})) for i in range(20)]
    async with two_sites(fleet_keys[1], devs, []) as (_, bus_b, registry):
        ctl = FleetController(bus_b, fleet_keys[0], tmp_path / "audit.jsonl", approvals_needed=2,
                              registry=registry)
        report = await rollout(ctl, TargetQuery(site="north"), "openmos 0.2.0-bad", "alice", ["bob", "carol"],
                               soak_s=0.2)
        assert report.halted and report.failed == ["north/a00"] and report.rolled_back == ["north/a00"]
        assert all(d.firmware == "openmos 0.1.0" for d in devs)  # canary restored, nobody else touched
        assert sum(d.history.count("install") for d in devs[1:]) == 0
        good = await rollout(ctl, TargetQuery(site="north"), "openmos 0.2.0", "alice", ["bob", "carol"],
                             soak_s=0.2)
        assert not good.halted and len(good.updated) == 20
        assert all(d.firmware == "openmos 0.2.0" for d in devs)


async def test_poller_reads_every_device_and_reports_unreachable_ones() -> None:
    from openmos.fleet.poller import poll_all
    from openmos.integrations.pyasic_miner import OpenMOSMiner
    from openmos.testbed.farm import device_ip, serve

    servers = await serve(30)
    try:
        ips = [device_ip(i) for i in range(30)] + ["127.1.200.1"]  # the last one has nothing listening
        seen: list[str] = []
        snaps = await poll_all(ips, concurrency=8, timeout_s=2, progress=lambda s: seen.append(s.ip))
        ok = [s for s in snaps if s.ok]
        assert len(ok) == 30 and len(seen) == 31
        assert not snaps[-1].ok and "Connect" in snaps[-1].error
        s0 = ok[0]
        assert s0.boards == 3 and s0.chips == 324 and 190 < s0.hashrate_ths < 210 and s0.pool_user == "site.w0"
        # pyasic reads the same device to the same figures.
        data = await OpenMOSMiner(device_ip(0)).get_data()
        assert abs(float(data.hashrate) - s0.hashrate_ths) < 0.01 and data.wattage == round(s0.power_w or 0)
    finally:
        for s in servers:
            await s.stop()


async def test_pyasic_worker_drives_a_mock_bitaxe_over_its_vendor_api(fleet_keys: tuple[bytes, bytes],
                                                                      tmp_path: Path) -> None:
    """A third-party miner (ESP-Miner/AxeOS REST on loopback) read and controlled through pyasic on the bus."""
    from aiohttp import web
    from pyasic.miners.bitaxe.espminer.BM.BM1370 import BitAxeGamma

    from openmos.fleet.workers.pyasic import PyasicWorker

    patches: list[dict[str, object]] = []
    restarts: list[bool] = []
    info = {"power": 18.7, "hashRate": 1071.5, "expectedHashrate": 1071.0, "uptimeSeconds": 3600,
            "smallCoreCount": 2040, "asicCount": 1, "frequency": 525, "temp": 58.5, "vrTemp": 49.0,
            "voltage": 5100, "coreVoltage": 1150, "fanrpm": 3200, "fanspeed": 60, "hostname": "bitaxe-7",
            "version": "v2.4.0", "macAddr": "aa:bb:cc:dd:ee:07", "stratumURL": "10.0.0.5", "stratumPort": 3333,
            "stratumUser": "site.bitaxe7", "fallbackStratumURL": "", "fallbackStratumPort": 3333,
            "fallbackStratumUser": "", "autofanspeed": 1, "sharesAccepted": 120, "sharesRejected": 1,
            "ASICModel": "BM1370"}

    async def system_info(_: web.Request) -> web.Response:
        return web.json_response(info)

    async def asic(_: web.Request) -> web.Response:
        return web.json_response({"ASICModel": "BM1370", "asicCount": 1, "defaultFrequency": 525})

    async def patch(request: web.Request) -> web.Response:
        patches.append(await request.json())
        return web.json_response({})

    async def restart(_: web.Request) -> web.Response:
        restarts.append(True)
        return web.json_response({})

    app = web.Application()
    app.add_routes([web.get("/api/system/info", system_info), web.get("/api/system/asic", asic),
                    web.patch("/api/system", patch), web.post("/api/system/restart", restart)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.7", free_local_port())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        miner = BitAxeGamma("127.0.0.7")
        miner.web.port = port
        worker = PyasicWorker(miner, "bitaxe-7", tags={"rack": "desk"})
        status = await worker.refresh()
        assert 1.0 < status.hashrate_ths < 1.2 and status.power_w == 19 and status.hottest_c == 58.5
        async with two_sites(fleet_keys[1], [], []) as (bus_a, bus_b, registry):
            node = DeviceNode(bus_a, "desk", worker, [fleet_keys[1]], interval_s=0.5)
            await node.start()
            registry.pin("desk", "bitaxe-7", node.public_key)
            ctl = FleetController(bus_b, fleet_keys[0], tmp_path / "audit.jsonl", approvals_needed=1,
                                  registry=registry)
            inventory = await inventory_of(ctl, 1)  # the node started after the sites met: wait for it
            assert inventory[0]["device"] == "bitaxe-7" and inventory[0]["mac"] == "AA:BB:CC:DD:EE:07"
            req = ctl.request("set_pools", {"pools": [{"url": "stratum+tcp://10.0.0.9:3333", "user": "me.bitaxe"}]},
                              TargetQuery(devices=("bitaxe-7",)), "alice")
            ctl.approve(req.request_id, "bob")
            result = await ctl.execute(req.request_id, "alice")
            assert result["desk/bitaxe-7"]["ok"], result
            assert patches and patches[-1].get("stratumUser") == "me.bitaxe"
            reboot = ctl.request("reboot", {}, TargetQuery(devices=("bitaxe-7",)), "alice")
            ctl.approve(reboot.request_id, "bob")
            await ctl.execute(reboot.request_id, "alice")
            assert restarts == [True]
            await node.stop()
    finally:
        await runner.cleanup()


async def test_pyasic_worker_reads_and_curtails_a_mock_luxos_miner() -> None:
    """A second vendor through pyasic: LuxOS's cgminer-style API with session-gated curtail (sleep)."""
    from pyasic.miners.antminer.luxos.X21.S21 import LUXMinerS21

    from openmos.fleet.workers.pyasic import PyasicWorker

    from mock_luxos import MockLuxOS

    mock = MockLuxOS()
    await mock.start()
    try:
        miner = LUXMinerS21("127.0.0.8")
        miner.rpc.port = mock.port
        worker = PyasicWorker(miner, "lux-1")
        status = await worker.refresh()
        assert 190 < status.hashrate_ths < 200 and status.power_w == 3480 and worker.info().boards == 3
        assert status.pools[0].user == "lux.rig" and status.hottest_c is not None
        assert worker.inventory()["vendor_api"] == "LUXMinerS21"  # (pyasic 0.79 does not parse LuxOS MACs)
        result = await worker.act("pause", {})
        assert result.get("ok", True) and mock.sleeping and "logon" in mock.commands
        assert (await worker.refresh()).hashrate_ths == 0
    finally:
        await mock.stop()
