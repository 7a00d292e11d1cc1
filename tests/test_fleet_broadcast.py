"""The site-wide curtailment broadcast: a device acknowledges it once verified, admitted and queued
("accepted"), then reports it "applied" in a second signed event; the controller follows both, and every
attack on the broadcast or on the new events fails.

Zenoh on loopback; the devices are hosted by one ``DeviceHost`` (acknowledgements leave in batches)."""

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
from openmos.fleet.bus import BusConfig
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.node import DeviceHost, DeviceNode
from openmos.fleet.service import FleetService
from openmos.security.signing import generate_keypair, sign_document
from openmos.testbed.device import SimulatedFleetDevice

from helpers import wait_for

SITE = "north"


class GatedDevice(SimulatedFleetDevice):
    """A device whose control surface waits for ``gate`` before it applies a curtailment (a slow controller)."""

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id)
        self.gate = asyncio.Event()
        self.gate.set()
        self.applying = 0

    async def act(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        self.applying += 1
        await self.gate.wait()
        return await super().act(action, args)


@asynccontextmanager
async def hosted(tmp: Path, names: list[str]) -> AsyncIterator[tuple[FleetService, list[DeviceNode], bytes]]:
    generate_keypair(tmp / "cmd.pem", tmp / "cmd.pub")
    command_pem, command_pub = (tmp / "cmd.pem").read_bytes(), (tmp / "cmd.pub").read_bytes()
    service = FleetService(BusConfig(listen=[f"tcp/127.0.0.1:{free_local_port()}"]), "sqlite://", command_pem,
                           tmp / "audit.jsonl", registry=EnrollmentRegistry(None), flush_interval_s=0.2,
                           inventory_interval_s=0.5)
    await service.start()
    host = DeviceHost(service.bus, SITE)
    nodes = [DeviceNode(service.bus, SITE, GatedDevice(name), [command_pub], interval_s=0.5) for name in names]
    for node in nodes:
        service.registry.pin(SITE, node.device.device_id, node.public_key)
        host.add(node)
    await host.start()
    service.controller.follow_acks(SITE)
    try:
        yield service, nodes, command_pem
    finally:
        await host.stop()
        await service.stop()


def dropped(service: FleetService, reason: str) -> int:
    return service.bus.metrics.snapshot()["dropped"].get(reason, 0)


def device(node: DeviceNode) -> GatedDevice:
    assert isinstance(node.device, GatedDevice)
    return node.device


async def test_acknowledged_when_accepted_then_reported_applied(tmp_path: Path) -> None:
    """The acknowledgement comes before the control surface runs (it only waits on the gate here), and the
    controller sees which devices applied the level once they have."""
    names = [f"d{i}" for i in range(6)]
    async with hosted(tmp_path, names) as (service, nodes, _):
        ctl = service.controller
        for node in nodes:
            device(node).gate.clear()
        acked, _ = await ctl.curtail_site(SITE, 0.5, set(names), "grid", timeout_s=30)
        broadcast = ctl.last_broadcast[SITE]
        assert acked == set(names) and broadcast.applied == set()
        assert all(device(n).fraction == 1.0 for n in nodes)  # accepted, not applied yet
        await wait_for(lambda: all(device(n).applying == 1 for n in nodes), 20, "every device to start applying")
        assert broadcast.applying() == len(names) and not broadcast.all_applied.is_set()
        for node in nodes:
            device(node).gate.set()
        assert await broadcast.wait_applied(30)
        assert broadcast.applied == set(names) and broadcast.applying() == 0 and not broadcast.not_applied
        assert all(device(n).fraction == 0.5 for n in nodes)
        assert broadcast.accepted_s is not None and broadcast.applied_s is not None
        assert broadcast.applied_s >= broadcast.accepted_s


async def test_a_newer_level_supersedes_one_still_queued(tmp_path: Path) -> None:
    """Only the newest level waits behind the one being applied: the one in between is reported not applied."""
    async with hosted(tmp_path, ["d0", "d1"]) as (service, nodes, _):
        ctl = service.controller
        for node in nodes:
            device(node).gate.clear()
        await ctl.curtail_site(SITE, 0.8, {"d0", "d1"}, "grid", timeout_s=30)
        first = ctl.last_broadcast[SITE]
        await wait_for(lambda: all(device(n).applying == 1 for n in nodes), 20, "the first level to be applying")
        await ctl.curtail_site(SITE, 0.6, {"d0", "d1"}, "grid", timeout_s=30)
        second = ctl.last_broadcast[SITE]
        await ctl.curtail_site(SITE, 0.4, {"d0", "d1"}, "grid", timeout_s=30)
        third = ctl.last_broadcast[SITE]
        assert await second.wait_applied(30)  # reported: superseded before it ran
        assert second.not_applied == {"d0", "d1"} and not second.applied
        for node in nodes:
            device(node).gate.set()
        assert await first.wait_applied(30) and await third.wait_applied(30)
        assert first.applied == third.applied == {"d0", "d1"}
        assert all(device(n).fraction == 0.4 and device(n).applying == 2 for n in nodes)


@pytest.mark.parametrize("fraction", [float("nan"), float("inf"), float("-inf"), 1e400, -1, 1.5, True, "0.5", None,
                                      [0.5], {"v": 0.5}])
async def test_absurd_fractions_are_refused_by_every_device(tmp_path: Path, fraction: Any) -> None:
    """Even validly signed (a controller bug, a stolen key): no acknowledgement, the device unchanged, the
    refusal kept; and the controller will not sign one."""
    async with hosted(tmp_path, ["d0", "d1"]) as (service, nodes, _):
        ctl = service.controller
        with pytest.raises(ValueError):
            await ctl.curtail_site(SITE, fraction, {"d0", "d1"}, "grid")
        service.bus.publish(keys.site_curtail(SITE), ctl._signed(SITE, "*", "curtail", {"fraction": fraction}),
                            control=True)
        await wait_for(lambda: all(n.refused for n in nodes), 20, "every device to refuse the curtailment")
        assert all("curtail" in n.refused[-1] and device(n).fraction == 1.0 and device(n).applying == 0
                   for n in nodes)
        assert service.bus.metrics.snapshot()["accepted"].get("event", 0) == 0  # nothing acknowledged


async def test_a_replayed_broadcast_and_one_for_another_site_are_refused(tmp_path: Path) -> None:
    async with hosted(tmp_path, ["d0", "d1"]) as (service, nodes, command_pem):
        ctl = service.controller
        await ctl.curtail_site(SITE, 0.5, {"d0", "d1"}, "grid", timeout_s=30)
        assert await ctl.last_broadcast[SITE].wait_applied(30)
        def events() -> int:
            return service.bus.metrics.snapshot()["accepted"].get("event", 0)

        assert events() == 4  # accepted + applied, from each device
        captured = ctl._signed(SITE, "*", "curtail", {"fraction": 0.1})
        service.bus.publish(keys.site_curtail(SITE), captured, control=True)
        await wait_for(lambda: events() == 8 and all(device(n).fraction == 0.1 for n in nodes), 20,
                       "the fresh broadcast to be accepted and applied")
        service.bus.publish(keys.site_curtail(SITE), captured, control=True)  # the same one again
        other = sign_document({"site": "south", "device": "*", "action": "curtail", "args": {"fraction": 0.0},
                               "issued_at": time.time(), "nonce": "south-broadcast-1"}, command_pem)
        service.bus.publish(keys.site_curtail(SITE), other, control=True)  # signed for site south
        stale = ctl._signed(SITE, "*", "curtail", {"fraction": 0.0})
        stale["signed"]["issued_at"] -= 3600
        service.bus.publish(keys.site_curtail(SITE), sign_document(stale["signed"], command_pem), control=True)
        await wait_for(lambda: all(len(n.refused) >= 3 for n in nodes), 20, "every device to refuse all three")
        for node in nodes:
            reasons = " | ".join(node.refused[-3:])
            assert "replay" in reasons and "site south" in reasons and "old" in reasons, reasons
            assert device(node).fraction == 0.1 and device(node).applying == 2
        await asyncio.sleep(0.5)
        assert events() == 8  # nothing acknowledged for the refused ones


async def test_forged_or_replayed_stage_events_are_not_believed(tmp_path: Path) -> None:
    """The new "stage" field: an unknown stage fails the schema; an "applied" replayed is a replay; one from a
    device the broadcast was not for is not counted; one signed by another key is a bad signature."""
    async with hosted(tmp_path, ["d0", "d1", "d2"]) as (service, nodes, _):
        ctl = service.controller
        d0, d1, d2 = nodes
        device(d0).gate.clear()
        device(d1).gate.clear()
        await ctl.curtail_site(SITE, 0.5, {"d0", "d1"}, "grid", timeout_s=30)  # not meant for d2
        broadcast = ctl.last_broadcast[SITE]
        nonce = broadcast.nonce
        bogus = d0.signed("event", {"ack": nonce, "fraction": 0.5, "stage": "done", "ok": True})
        service.bus.publish(keys.events(SITE, "d0"), bogus, control=True)
        await wait_for(lambda: dropped(service, "schema") >= 1, 20, "the unknown stage to fail the schema")
        older = d1.signed("event", {"ack": nonce, "fraction": 0.5, "stage": "applied", "ok": True})
        newer = d1.signed("event", {"ack": nonce, "fraction": 0.5, "stage": "applied", "ok": True})
        service.bus.publish(keys.events(SITE, "d1"), newer, control=True)
        await wait_for(lambda: "d1" in broadcast.applied, 20, "d1's (hand-made) applied event")
        service.bus.publish(keys.events(SITE, "d1"), older, control=True)  # an older sequence number
        service.bus.publish(keys.events(SITE, "d1"), newer, control=True)  # the same one again
        await wait_for(lambda: dropped(service, "replay") >= 1 and dropped(service, "duplicate") >= 1, 20,
                       "the replayed events to be dropped")
        stranger = d2.signed("event", {"ack": nonce, "fraction": 0.5, "stage": "applied", "ok": True})
        forged = d2.identity.sign({"kind": "event", "site": SITE, "device": "d0", "ts": time.time(),
                                   "seq": 2**40, "body": {"ack": nonce, "stage": "applied", "ok": True}})
        service.bus.publish(keys.events(SITE, "d2"), stranger, control=True)
        service.bus.publish(keys.host_events(SITE, "evil"), {"events": [forged]}, control=True)
        await wait_for(lambda: dropped(service, "bad_signature") >= 1, 20, "the forged event to be dropped")
        await asyncio.sleep(0.3)
        assert broadcast.applied == {"d1"} and "d2" not in broadcast.accepted and "d0" not in broadcast.applied
        for node in (d0, d1):
            device(node).gate.set()
        assert await broadcast.wait_applied(30) and broadcast.applied == {"d0", "d1"}
