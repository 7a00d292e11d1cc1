"""The fleet bus under attack: every test performs an attack from issue 12 and fails if it works.

Zenoh runs on loopback only, multicast scouting off, with the fleet's own mutual TLS where the transport
is under test."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
import re
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console

from openmos.api.auth import AuthStore
from openmos.base.net import free_local_port
from openmos.fleet import envelope, keys
from openmos.fleet.bus import BusConfig, FleetBus
from openmos.fleet.control import TargetQuery
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.envelope import DeviceKey
from openmos.fleet.node import DeviceHost, DeviceNode
from openmos.fleet.pki import FleetCA, FleetDir, make_csr, new_key
from openmos.fleet.service import FleetService
from openmos.fleet.web.app import create_fleet_app
from openmos.security.signing import sign_document
from openmos.testbed.device import SimulatedFleetDevice

from helpers import wait_for


@dataclass
class Fleet:
    ca: FleetCA
    endpoint: str
    service: FleetService
    site_bus: FleetBus
    nodes: list[DeviceNode]
    command_pem: bytes
    command_pub: bytes


def command_keys() -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


@asynccontextmanager
async def tls_fleet(tmp: Path, devices: dict[str, list[str]], **service_kw: Any) -> AsyncIterator[Fleet]:
    """A controller (mTLS listener) and one device-certified bus per site, each device enrolled by token."""
    ca = FleetCA.create()
    command_pem, command_pub = command_keys()
    endpoint = f"tls/127.0.0.1:{free_local_port()}"
    registry = service_kw.pop("registry", None) or EnrollmentRegistry(None)
    service = FleetService(BusConfig(listen=[endpoint], tls=ca.issue("controller"), role="controller",
                                     sites=tuple(service_kw.pop("sites", devices))),
                           service_kw.pop("store", "sqlite://"), command_pem, tmp / "audit.jsonl",
                           registry=registry, ca=ca, command_key_pem=command_pub, flush_interval_s=0.2,
                           inventory_interval_s=0.5, **service_kw)
    await service.start()
    buses: list[FleetBus] = []
    nodes: list[DeviceNode] = []
    hosts: list[DeviceHost] = []
    for site, names in devices.items():
        bus = FleetBus(BusConfig(connect=[endpoint], tls=ca.issue("device", site), role="device"))
        await bus.open()
        buses.append(bus)
        host = DeviceHost(bus, site)  # the site's devices in one process: acknowledgements leave in batches
        for name in names:
            node = DeviceNode(bus, site, SimulatedFleetDevice(name), [command_pub], interval_s=0.3)
            host.add(node)
            nodes.append(node)
        await host.start()
        hosts.append(host)
    try:
        for node in nodes:
            reply = await node.enroll(registry.issue_token(60, node.site), timeout_s=10)
            assert reply["status"] == "enrolled", reply
        yield Fleet(ca, endpoint, service, buses[0] if buses else service.bus, nodes, command_pem, command_pub)
    finally:
        for host in hosts:
            await host.stop()
        for bus in buses:
            await bus.close()
        await service.stop()


def dropped(service: FleetService, reason: str) -> int:
    return service.bus.metrics.snapshot()["dropped"].get(reason, 0)


async def quiet(seconds: float) -> None:
    """Give a message that should *not* arrive the time it would need if it could."""
    await asyncio.sleep(seconds)


# -- transport: mutual TLS and access control -------------------------------------------------------------


async def test_peers_without_a_fleet_certificate_cannot_join_the_bus(tmp_path: Path) -> None:
    async with tls_fleet(tmp_path, {"north": ["a1", "a2"]}) as fleet:
        await wait_for(lambda: len(fleet.service.latest) == 2, 20, "telemetry over mTLS")
        port = fleet.endpoint.rsplit(":", 1)[1]
        intruders = [
            FleetBus(BusConfig(connect=[f"tcp/127.0.0.1:{port}"])),  # plain TCP
            FleetBus(BusConfig(connect=[fleet.endpoint], tls=FleetCA.create().issue("controller"))),  # other CA
        ]
        legit = FleetBus(BusConfig(connect=[fleet.endpoint], tls=fleet.ca.issue("controller"), role="controller"))
        for bus in (*intruders, legit):
            await bus.open()
        try:
            await wait_for(lambda: bool(legit.peers()), 10, "the legitimate controller peer to connect")
            probe = keys.enroll("north", "probe")  # the controller answers this to any fleet-certified peer
            assert (await legit.query(probe, timeout_s=5.0))[0][1]["status"] == "refused"
            for bus in intruders:
                assert bus.peers() == []
                assert await bus.query(probe, timeout_s=1.0) == []
                bus.publish(keys.site_curtail("north"), {"signed": {}, "signature": ""})
            await quiet(1.0)
            assert all(not n.refused for n in fleet.nodes)  # nothing even reached the devices
        finally:
            for bus in (*intruders, legit):
                await bus.close()


async def test_a_device_certificate_cannot_read_inventory_or_command_devices(tmp_path: Path) -> None:
    """zenoh access control: a node with a valid *device* certificate may only do what devices do."""
    async with tls_fleet(tmp_path, {"north": ["a1"]}) as fleet:
        rogue = FleetBus(BusConfig(connect=[fleet.endpoint], tls=fleet.ca.issue("device", "north"), role="device"))
        await rogue.open()
        try:
            await wait_for(lambda: bool(rogue.peers()), 10, "the device-certified peer to connect")
            assert await rogue.query("openmos/*/dev/*/inventory", {"nonce": "stolen-inventory"}, timeout_s=1) == []
            assert await rogue.query(keys.command("north", "a1", "pause"), timeout_s=1) == []
            device = fleet.nodes[0].device
            captured = sign_document({"site": "north", "device": "*", "action": "curtail", "args": {"fraction": 0.0},
                                      "issued_at": time.time(), "nonce": "rogue-curtail-1"}, fleet.command_pem)
            rogue.publish(keys.site_curtail("north"), captured)  # even a validly signed one: wrong sender
            await quiet(1.0)
            assert isinstance(device, SimulatedFleetDevice) and device.fraction == 1.0
        finally:
            await rogue.close()


async def test_a_process_hosting_a_sites_devices_over_mtls(tmp_path: Path) -> None:
    """A device host: one queryable and one subscription for all its devices, each device answering in its own
    name; acknowledgements come in batches, each believed only from its own device's key; forged, replayed and
    oversized batches are dropped and counted."""
    names = [f"a{i}" for i in range(5)]
    async with tls_fleet(tmp_path, {"north": names}) as fleet:
        ctl, service = fleet.service.controller, fleet.service
        assert len(fleet.site_bus._declared) == 2  # whatever the number of devices (was 13 per device)
        assert [d["device"] for d in await ctl.inventory("north")] == names
        acked, _ = await ctl.curtail_site("north", 0.5, set(names), "grid-operator", timeout_s=30)
        assert acked == set(names) and dropped(service, "bad_batch") == 0
        broadcast = ctl.last_broadcast["north"]  # acknowledged = accepted; each device then reports it applied
        assert await broadcast.wait_applied(30) and broadcast.applied == set(names) and broadcast.applying() == 0
        assert all(isinstance(n.device, SimulatedFleetDevice) and n.device.fraction == 0.5 for n in fleet.nodes)
        assert (await ctl.command("north", "a3", "pause", {}, "alice"))["ok"]
        assert [isinstance(n.device, SimulatedFleetDevice) and n.device.paused for n in fleet.nodes] == \
            [False, False, False, True, False]
        assert await ctl.status("north", "nowhere") is None  # a device no host has: no reply, no error

        rogue = FleetBus(BusConfig(connect=[fleet.endpoint], tls=fleet.ca.issue("device", "north"), role="device"))
        await rogue.open()
        try:
            await wait_for(lambda: bool(rogue.peers()), 10, "the device-certified peer to connect")
            await asyncio.sleep(0.5)  # the controller's subscriptions reach the new peer
            attacker = DeviceKey()
            forged = attacker.sign({"kind": "event", "site": "north", "device": "a1", "ts": time.time(),
                                    "seq": 2**40, "body": {"ack": "forged-ack-1", "ok": True}})
            genuine = fleet.nodes[2].sign("event", {"event": "test", "message": "once only"})
            before = service.bus.metrics.snapshot()["accepted"].get("event", 0)
            rogue.publish(keys.host_events("north", "evil"), {"events": [forged, genuine, genuine, {"x": 1}]},
                          control=True)
            rogue.publish(keys.host_events("north", "evil"), {"events": [genuine] * 101}, control=True)
            rogue.publish(keys.host_events("north", "evil"), {"events": "not a list"}, control=True)
            await wait_for(lambda: dropped(service, "bad_batch") >= 2 and dropped(service, "duplicate") >= 1, 20,
                           "the forged batches to be counted")  # the genuine event's second copy: a duplicate
            assert dropped(service, "bad_signature") >= 1 and dropped(service, "unsigned") >= 1
            assert service.bus.metrics.snapshot()["accepted"].get("event", 0) == before + 1  # the genuine one, once
        finally:
            await rogue.close()


async def test_a_device_certificate_of_one_site_cannot_publish_in_another_sites_key_space(tmp_path: Path) -> None:
    """zenoh's access control on the controller: a device certificate issued for site south
    (CN ``openmos-device@south``) gets nothing under ``openmos/north/...`` through, even telemetry that is
    validly signed by north/d0's own enrolled key (a stolen device key on another site's box), which the
    application layer alone would believe. The same node's messages in its own site do arrive (and, not
    signed by an enrolled key, are dropped and counted there)."""
    async with tls_fleet(tmp_path, {"north": ["d0"], "south": ["s0"]}) as fleet:
        service = fleet.service
        d0 = fleet.nodes[0]
        await wait_for(lambda: ("north", "d0") in service.latest, 20, "real telemetry over mTLS")
        rogue = FleetBus(BusConfig(connect=[fleet.endpoint], tls=fleet.ca.issue("device", "south"), role="device"))
        await rogue.open()
        try:
            await wait_for(lambda: bool(rogue.peers()), 10, "the south-certified peer to connect")
            evil = {"hashrate_ths": 9_999.0, "pools": [{"url": "stratum+tcp://evil.example:3333", "user": "x"}]}

            def send() -> None:
                rogue.publish(keys.telemetry("north", "d0"), d0.signed("telemetry", evil))  # valid, but north
                rogue.publish(keys.telemetry("south", "s0"), d0.signed("telemetry", evil))  # its own site

            await publish_until(service, "bad_signature", send, "the rogue's own-site messages to arrive")
            await quiet(1.0)
            assert service.latest["north", "d0"]["hashrate_ths"] < 1_000
            assert "stratum+tcp://evil.example:3333" not in service.overview()["pools"]
            # the controller lets the site-bound certificate in for its own site only
            assert await rogue.query(keys.inventory("north", "d0"), {"nonce": "rogue-inventory-1"}, timeout_s=1) == []
        finally:
            await rogue.close()


async def test_enrollment_over_mtls_issues_a_device_certificate_from_a_csr(tmp_path: Path) -> None:
    """An enrollee certificate only reaches enrollment; the device's own key gets a device certificate."""
    async with tls_fleet(tmp_path, {}) as fleet:
        enrollee = FleetBus(BusConfig(connect=[fleet.endpoint], tls=fleet.ca.issue("enrollee"), role="enrollee"))
        await enrollee.open()
        try:
            await wait_for(lambda: bool(enrollee.peers()), 10, "the enrollee to connect")
            assert await enrollee.query("openmos/*/dev/*/inventory", timeout_s=1) == []  # enrollment only
            node = DeviceNode(enrollee, "south", SimulatedFleetDevice("b7"), [fleet.command_pub])
            tls_key = new_key()
            token = fleet.service.registry.issue_token(60, "south")
            reply = await node.enroll(token, csr=make_csr(tls_key, "device"), timeout_s=10)
            assert reply["status"] == "enrolled" and "command_key" in reply
            cert = x509.load_pem_x509_certificate(reply["certificate"].encode())
            assert cert.subject.rfc4514_string() == "CN=openmos-device@south"  # zenoh lets it in south only
            uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert "openmos://south/b7" in uris.get_values_for_type(x509.UniformResourceIdentifier)
            assert (await node.enroll(token))["status"] == "enrolled"  # idempotent for the same key
            again = DeviceNode(enrollee, "south", SimulatedFleetDevice("b8"), [fleet.command_pub])
            assert (await again.enroll(token))["reason"] == "bad_token"  # one-time
        finally:
            await enrollee.close()


# -- application layer: enrolled keys, schemas, site binding -----------------------------------------------


@asynccontextmanager
async def plain_fleet(tmp: Path, sites: dict[str, list[str]], registry: EnrollmentRegistry | None = None
                      ) -> AsyncIterator[tuple[FleetService, list[DeviceNode]]]:
    """One service and its devices on a single loopback session: the attacker is a node already on the bus
    (a stolen device certificate), so only the application layer stands in the way."""
    command_pem, command_pub = command_keys()
    service = FleetService(BusConfig(listen=[f"tcp/127.0.0.1:{free_local_port()}"]), "sqlite://", command_pem,
                           tmp / "audit.jsonl", registry=registry or EnrollmentRegistry(None), flush_interval_s=0.2,
                           inventory_interval_s=0.5)
    await service.start()
    nodes = [DeviceNode(service.bus, site, SimulatedFleetDevice(name), [command_pub], interval_s=0.3)
             for site, names in sites.items() for name in names]
    for node in nodes:
        service.registry.pin(node.site, node.device.device_id, node.public_key)
        await node.start()
    try:
        yield service, nodes
    finally:
        for node in nodes:
            await node.stop()
        await service.stop()


def attacker_telemetry(attacker: DeviceKey, site: str, device: str, body: dict[str, Any], seq: int) -> dict[str, Any]:
    return attacker.sign({"kind": "telemetry", "site": site, "device": device, "ts": time.time(), "seq": seq,
                          "body": body})


async def test_spoofed_and_ghost_telemetry_never_reaches_the_dashboard(tmp_path: Path) -> None:
    async with plain_fleet(tmp_path, {"north": [f"d{i}" for i in range(5)]}) as (service, _):
        await wait_for(lambda: len(service.latest) == 5, 20, "real telemetry")
        # the inventory (announcements) arrives apart from telemetry: wait for all five there too
        await wait_for(lambda: service.overview()["devices"] == 5, 20, "every device in the inventory")
        before = service.overview()
        attacker = DeviceKey()
        evil = {"hashrate_ths": 9_999.0, "power_w": 1.0, "pools": [{"url": "stratum+tcp://evil.example:3333",
                                                                    "user": "thief"}]}
        seq = time.time_ns()
        for i in range(200):  # in a real device's name, signed by another key
            forged = attacker_telemetry(attacker, "north", "d1", evil, seq + i)
            service.bus.publish(keys.telemetry("north", "d1"), forged)
        for i in range(2000):  # ghosts: unenrolled devices
            service.bus.publish(keys.telemetry("north", f"ghost-{i}"),
                                attacker_telemetry(attacker, "north", f"ghost-{i}", evil, seq + i))
        service.bus.publish(keys.telemetry("north", "d2"), {"hashrate_ths": 9_999.0})  # unsigned
        # zenoh may shed some of a burst under load (telemetry is sent best-effort); every one that arrives
        # must be dropped, none believed.
        await wait_for(lambda: dropped(service, "not_enrolled") >= 100, 20, "the ghosts to be dropped")
        await wait_for(lambda: dropped(service, "bad_signature") >= 10, 20, "the forgeries to be dropped")
        await quiet(1.5)
        assert dropped(service, "not_enrolled") <= 2000 and dropped(service, "bad_signature") <= 200
        after = service.overview()
        assert after["online"] == 5 and after["devices"] == before["devices"] == 5
        assert after["hashrate_ths"] < 5 * 300 and "stratum+tcp://evil.example:3333" not in after["pools"]
        assert not any(d.startswith("ghost") for _, d in service.latest) and dropped(service, "unsigned") >= 1
        assert not any(a.kind == "pool" for a in service.alerts.active.values())


async def test_malformed_telemetry_from_an_enrolled_key_is_dropped_and_counted(tmp_path: Path) -> None:
    """``"hashrate_ths": "abc"`` (and NaN, 1e400, negatives, deep nesting, huge bodies) never 500 the overview."""
    async with plain_fleet(tmp_path, {"north": ["d0"]}) as (service, nodes):
        node = nodes[0]
        await wait_for(lambda: ("north", "d0") in service.latest, 20, "real telemetry")
        bad_bodies: list[dict[str, Any]] = [{"hashrate_ths": "abc"}, {"hashrate_ths": math.nan},
                                            {"power_w": math.inf}, {"power_w": -5.0}, {"hottest_c": 1e300},
                                            {"pools": [{"url": "x"}] * 50}, {"pools": "stratum+tcp://x"},
                                            {"paused": "yes"}, {"hashrate_ths": [1.0]}]
        await node.stop()  # only the attacker's messages from now on
        async def send_until_dropped(reason: str, payload: Any) -> None:
            """Publish until the drop is counted (telemetry is best-effort, a put can be shed under load)."""
            before = dropped(service, reason)
            for _ in range(20):
                data = payload() if callable(payload) else payload
                if isinstance(data, bytes):
                    service.bus._session.put(keys.telemetry("north", "d0"), data)
                else:
                    service.bus.publish(keys.telemetry("north", "d0"), data)
                with contextlib.suppress(AssertionError):
                    await wait_for(lambda: dropped(service, reason) > before, 2, f"a {reason} drop")
                    return
            raise AssertionError(f"no {reason} drop counted")

        for body in bad_bodies:  # as a parsed envelope and in the compact wire layout (verified as bytes)
            await send_until_dropped("schema", lambda body=body: node.sign("telemetry", body))
            await send_until_dropped("schema", lambda body=body: node.signed("telemetry", body))
        def signed_garbage() -> bytes:  # validly signed by the enrolled key, but not JSON: refused after the check
            bad = b'{"kind":"telemetry","body":' + b"[" * 5000
            signature = node.identity._schnorr(hashlib.sha256(envelope.DOMAIN + bad).digest())
            return envelope.PREFIX + base64.b64encode(signature) + envelope.MIDDLE + bad + b"}"

        await send_until_dropped("not_json", signed_garbage)
        await send_until_dropped("too_large", lambda: node.signed("telemetry", {"x": "y" * 100_000}))
        await send_until_dropped("too_large", lambda: node.sign("telemetry", {"x": "y" * 100_000}))
        await send_until_dropped("not_json", ("[" * 30_000 + "]" * 30_000).encode())  # deep nesting
        await send_until_dropped("not_json", b'{"signed": 1e400, "x": NaN')
        latest = service.latest["north", "d0"]
        assert isinstance(latest["hashrate_ths"], float) and latest["hashrate_ths"] > 100
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_fleet_app(service, AuthStore(None))),
                                     base_url="http://localhost") as client:
            overview = await client.get("/api/fleet/overview")
            assert overview.status_code == 200 and overview.json()["bus_dropped"] >= len(bad_bodies) + 2
            assert (await client.get("/api/fleet/devices")).status_code == 200
            metrics = (await client.get("/metrics")).text
        count = re.search(r'openmos_fleet_bus_dropped_total\{reason="schema"\} (\d+)', metrics)
        assert count and int(count.group(1)) >= len(bad_bodies)
        rows = await service.db(service.store.devices)
        assert all(r["device"] == "d0" for r in rows)


async def test_replayed_telemetry_is_dropped(tmp_path: Path) -> None:
    async with plain_fleet(tmp_path, {"north": ["d0"]}) as (service, _nodes):
        captured: list[Any] = []
        service.bus.subscribe(keys.telemetry("north", "d0"), lambda _, doc: captured.append(doc))
        await wait_for(lambda: len(captured) >= 2, 20, "telemetry to capture")
        for doc in captured[:2]:
            service.bus.publish(keys.telemetry("north", "d0"), doc)
        await wait_for(lambda: dropped(service, "replay") >= 1, 20, "the replays to be dropped")


async def test_a_telemetry_poll_believes_only_the_latest_snapshot_signed_by_the_enrolled_key(tmp_path: Path) -> None:
    """A poll is answered with each device's last signed snapshot (no signature per poll): an older snapshot
    (replay), an old one never seen (stale time), another device's or another site's snapshot, and the same
    snapshot past the re-read window are all refused and counted; none is believed."""
    async with plain_fleet(tmp_path, {"north": ["d0"], "south": ["d0"]}) as (service, nodes):
        ctl = service.controller
        victim = DeviceNode(service.bus, "north", SimulatedFleetDevice("v0"), [])  # its answers are ours to choose
        service.registry.pin("north", "v0", victim.public_key)
        served: list[bytes] = []

        async def answer(key: str, params: dict[str, Any]) -> bytes:
            return served[-1]

        service.bus.serve(keys.telemetry("north", "v0"), answer)

        async def poll_with(payload: bytes, refused: str | None = None) -> dict[str, Any] | None:
            served.append(payload)
            before = dropped(service, refused) if refused else 0
            found = await ctl.poll("north", timeout_s=20)
            assert ("south", "d0") not in found  # the site polled only
            assert ("north", "d0") in found or service.verifier.reread_s == 0  # the real device (see the end)
            if refused:
                assert dropped(service, refused) >= before + 1, refused
            return found.get(("north", "v0"))

        first = victim.refresh_snapshot()
        believed = await poll_with(first)
        assert believed is not None and believed["hashrate_ths"] > 100 and believed["site"] == "north"
        checked: list[bytes] = []
        real_check = service.verifier.verify_signature

        def counting(signature: bytes, document: bytes, key: Any) -> None:
            checked.append(document)
            real_check(signature, document, key)

        service.verifier.verify_signature = counting  # type: ignore[method-assign]
        assert await poll_with(first) == believed  # the same snapshot read again (devices re-sign every 5 s) ...
        assert envelope.split_payload(first)[1] not in checked  # type: ignore[index]  # ... not verified twice
        tampered = first.replace(b'"hashrate_ths":', b'"hashrate_ths":9')  # its signature on other bytes
        assert tampered != first and await poll_with(tampered, "bad_signature") is None
        newer = victim.refresh_snapshot()
        assert await poll_with(newer) is not None
        assert await poll_with(first, "replay") is None  # older than what was believed
        assert await poll_with(nodes[0].snapshot(), "bad_signature") is None  # another device's (north/d0)
        assert await poll_with(nodes[1].snapshot(), "bad_signature") is None  # another site's (south/d0)

        def signed_by_victim(**doc: Any) -> bytes:
            return victim.identity.sign_payload({"kind": "telemetry", "site": "north", "device": "v0",
                                                 "ts": time.time(), "seq": time.time_ns(), "body": {}, **doc})

        assert await poll_with(signed_by_victim(site="south"), "identity_mismatch") is None  # its key, other site
        assert await poll_with(signed_by_victim(ts=time.time() - 3600), "stale") is None  # an old, never-seen one
        assert await poll_with(signed_by_victim(kind="status"), "wrong_kind") is None
        service.verifier.reread_s = 0.0  # the window has passed: the same snapshot is a copy of a dead device's
        assert await poll_with(newer, "stale") is None
        service.verifier.reread_s = 15.0
        everywhere = await ctl.poll(timeout_s=20)
        assert {("north", "d0"), ("south", "d0")} <= set(everywhere)


async def test_the_service_and_an_energy_link_in_one_process_believe_each_telemetry_once(tmp_path: Path) -> None:
    """Both follow the same telemetry through one controller: each message is verified once and reaches both
    (a second check of the same message used to refuse it, counted as a replay, and starve the other)."""
    from openmos.fleet.energy import FleetLink

    async with plain_fleet(tmp_path, {"north": ["d0", "d1"], "south": ["s0"]}) as (service, _):
        link = FleetLink(service.controller, "north")
        link.start()
        await wait_for(lambda: set(link._full_w) == {"d0", "d1"}, 20, "the link's telemetry")
        believed = service.bus.metrics.snapshot()["accepted"].get("telemetry", 0)
        await wait_for(lambda: service.bus.metrics.snapshot()["accepted"].get("telemetry", 0) >= believed + 9, 20,
                       "three more telemetry intervals")
        assert {("north", "d0"), ("north", "d1"), ("south", "s0")} <= set(service.latest)
        assert "s0" not in link._full_w  # the link follows its own site only
        assert dropped(service, "replay") == dropped(service, "duplicate") == 0


def test_a_device_signs_its_snapshot_when_produced_and_answers_polls_with_it() -> None:
    node = DeviceNode(FleetBus(BusConfig()), "north", SimulatedFleetDevice("a1"), [])
    first = node.snapshot()
    assert node.snapshot() is first  # a poll costs no signature while the snapshot is fresh
    node._snapshot_at -= 10  # older than SNAPSHOT_FRESH_S: the next poll gets a new one
    second = node.snapshot()
    assert second != first and node.snapshot() is second
    docs = [json.loads(envelope.split_payload(p)[1]) for p in (first, second)]  # type: ignore[index]
    assert [d["kind"] for d in docs] == ["telemetry", "telemetry"] and docs[1]["seq"] > docs[0]["seq"]


async def test_a_reply_in_a_devices_name_is_not_recorded_as_its_result(tmp_path: Path) -> None:
    async with plain_fleet(tmp_path, {"north": ["d0"]}) as (service, nodes):
        ctl = service.controller
        await wait_for(lambda: ("north", "d0") in service.inventory, 20, "inventory")
        genuine = await service.bus.query(keys.inventory("north", "d0"), {"nonce": "captured-query-1"})
        await nodes[0].stop()
        await service.bus.close()  # the real device goes away; an impostor answers in its name
        await service.bus.open()
        attacker = DeviceKey()
        impostor = DeviceNode(service.bus, "north", SimulatedFleetDevice("d0"), [], identity=attacker)
        await impostor.start()
        inventory = await ctl.inventory()
        assert inventory == []
        req = ctl.request("locate", {}, TargetQuery(devices=("d0",)), "alice")
        ctl.requests[req.request_id].state = "ready"
        results = await ctl._verified_query(keys.command("north", "d0", "locate"), "reply",
                                            ctl._signed("north", "d0", "locate", {}))
        assert results == {}
        await impostor.stop()

        async def replay(key: str, params: dict[str, Any]) -> dict[str, Any]:
            return genuine[0][1]  # a genuine, correctly signed reply to an *earlier* query

        service.bus.serve(keys.inventory("north", "d0"), replay)
        assert await ctl.inventory() == []
        assert dropped(service, "bad_signature") >= 1 and dropped(service, "wrong_request") >= 1


async def test_a_command_captured_at_one_site_is_refused_at_another(tmp_path: Path) -> None:
    async with plain_fleet(tmp_path, {"site-a": ["sim-00011"], "site-b": ["sim-00011"]}) as (service, nodes):
        ctl = service.controller
        command = ctl._signed("site-a", "sim-00011", "pause", {})
        at_a, at_b = nodes
        replies = await service.bus.query(keys.command("site-b", "sim-00011", "pause"), command)
        assert replies and replies[0][1]["signed"]["body"]["ok"] is False
        assert "site" in replies[0][1]["signed"]["body"]["error"]
        assert isinstance(at_b.device, SimulatedFleetDevice) and not at_b.device.paused
        curtail = ctl._signed("site-a", "*", "curtail", {"fraction": 0.0})
        service.bus.publish(keys.site_curtail("site-b"), curtail)
        await wait_for(lambda: bool(at_b.refused), 10, "site B to refuse the curtail")
        assert isinstance(at_a.device, SimulatedFleetDevice) and at_b.device.fraction == 1.0
        ok = await service.bus.query(keys.command("site-a", "sim-00011", "pause"), command)
        assert ok[0][1]["signed"]["body"]["ok"] and at_a.device.paused and not at_b.device.paused


async def publish_until(service: FleetService, reason: str, send: Any, what: str) -> None:
    """Send until the controller has counted one more drop for ``reason`` (telemetry is best-effort: a put
    can be shed under load, so one message is not enough to wait for)."""
    before = dropped(service, reason)
    for _ in range(20):
        send()
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: dropped(service, reason) > before, 2, what)
            return
    raise AssertionError(f"no {reason} drop counted for {what}")


async def test_an_enrolled_device_cannot_speak_in_another_devices_key_space(tmp_path: Path) -> None:
    """A device with a valid certificate *and* an enrolled key (d1) publishes and answers under another
    device's key expression (d0, and a device of another site): every such message is dropped and counted,
    none reaches the dashboard, the store or a query's result."""
    async with tls_fleet(tmp_path, {"north": ["d0", "d1"], "south": ["s0"]}) as fleet:
        service = fleet.service
        d1 = fleet.nodes[1]
        await wait_for(lambda: {("north", "d0"), ("north", "d1"), ("south", "s0")} <= set(service.latest), 20,
                       "real telemetry over mTLS")
        evil = {"hashrate_ths": 9_999.0, "pools": [{"url": "stratum+tcp://evil.example:3333", "user": "thief"}]}
        bus = fleet.site_bus  # d1's own node: a device certificate, past zenoh's access control

        # 1. its own signed document (it names d1) on d0's key expression: not d0's key
        await publish_until(service, "bad_signature",
                            lambda: bus.publish(keys.telemetry("north", "d0"), d1.signed("telemetry", evil)),
                            "d1's telemetry on d0's key")

        # 2. a document naming d0, signed by d1's enrolled key, on d0's key expression and on its own
        def as_d0(key: str) -> Any:
            def send() -> None:
                forged = d1.identity.sign_payload({"kind": "telemetry", "site": "north", "device": "d0",
                                                   "ts": time.time(), "seq": time.time_ns(), "body": evil})
                bus.publish(key, forged)
            return send

        await publish_until(service, "bad_signature", as_d0(keys.telemetry("north", "d0")), "d1's key signing as d0")
        await publish_until(service, "identity_mismatch", as_d0(keys.telemetry("north", "d1")),
                            "d1 naming d0 in its own key space")
        # 3. another site's key space (south/s0) with the same key: a north certificate gets nothing under
        #    openmos/south/ past the controller's zenoh access control (next test); none is believed
        def as_s0() -> None:
            forged = d1.identity.sign_payload({"kind": "telemetry", "site": "south", "device": "s0",
                                               "ts": time.time(), "seq": time.time_ns(), "body": evil})
            bus.publish(keys.telemetry("south", "s0"), forged)

        for _ in range(20):
            as_s0()

        # 4. d1 answers status queries for d0 (in its own name and in d0's): only d0's own reply counts
        async def impostor(key: str, params: dict[str, Any]) -> bytes:
            nonce = params.get("nonce") if isinstance(params, dict) else None
            return d1.identity.sign_payload({"kind": "status", "site": "north", "device": "d0", "ts": time.time(),
                                             "seq": 1, "request": nonce, "body": evil})

        bus.serve(keys.status("north", "d0"), impostor)
        before = dropped(service, "bad_signature")
        status = await service.controller.status("north", "d0")
        assert status is not None and status["hashrate_ths"] < 1_000 and status["device"] == "d0"
        assert dropped(service, "bad_signature") > before  # the impostor's reply arrived and was refused

        await quiet(1.0)
        assert len(service.latest) == 3
        for row in service.latest.values():
            assert row["hashrate_ths"] < 1_000
        assert "stratum+tcp://evil.example:3333" not in service.overview()["pools"]


async def test_a_revoked_device_is_refused_at_once_by_a_running_controller(tmp_path: Path) -> None:
    """zenoh has no revocation list: a revoked device may keep its TLS certificate until it expires. Its
    pinned key is what is revoked: from the next second on every message it sends is dropped (telemetry,
    replies), and its old key can never be enrolled again, even with a fresh token."""
    fleet_dir = FleetDir(tmp_path / "fleet")
    fleet_dir.init()
    registry = EnrollmentRegistry(fleet_dir.enrollment)
    async with plain_fleet(tmp_path, {"north": ["d0", "d1"]}, registry) as (service, nodes):
        await wait_for(lambda: {("north", "d0"), ("north", "d1")} <= set(service.latest), 20,
                       "telemetry from both devices")
        assert await service.controller.status("north", "d0") is not None
        from openmos.cli.main import main

        assert main(["fleet", "revoke", str(fleet_dir.root), "north/d0"]) == 0  # the CLI: another registry view
        await wait_for(lambda: dropped(service, "not_enrolled") >= 3, 20, "d0's telemetry to be refused")
        revoked_at = service.latest["north", "d0"]["received"]
        seen_d1 = service.latest["north", "d1"]["received"]
        await wait_for(lambda: service.latest["north", "d1"]["received"] > seen_d1, 20, "d1 to go on being believed")
        assert service.latest["north", "d0"]["received"] == revoked_at  # nothing from d0 believed since
        assert await service.controller.status("north", "d0") is None
        assert [d["device"] for d in await service.controller.inventory()] == ["d1"]
        # The revoked key cannot come back: not for approval, not with a token, not under another name.
        d0 = nodes[0]
        for token in (None, registry.issue_token(60, "north")):
            for name in ("d0", "d0-again"):
                request = d0.identity.sign({"kind": "enroll", "site": "north", "device": name, "ts": time.time(),
                                            "seq": 1, "body": {"public_key": d0.public_key,
                                                               **({"token": token} if token else {})}})
                reply = await service._on_enroll(keys.enroll("north", name), request)
                assert reply == {"status": "refused", "reason": "key_revoked", "error": reply.get("error")}, reply
        registry.refresh(force=True)
        assert not registry.is_enrolled("north", "d0") and "north/d0" not in registry.pending
        # With a new key (and a token) the device is back.
        d0.identity = DeviceKey()
        assert (await d0.enroll(registry.issue_token(60, "north"), timeout_s=10))["status"] == "enrolled"
        await wait_for(lambda: service.latest["north", "d0"]["received"] > revoked_at, 20,
                       "d0 believed with its new key")


# -- enrollment ---------------------------------------------------------------------------------------------


def enroll_request(key: DeviceKey, site: str, device: str, token: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"public_key": key.public_b64}
    if token:
        body["token"] = token
    return key.sign({"kind": "enroll", "site": site, "device": device, "ts": time.time(), "seq": 1, "body": body})


async def test_twenty_thousand_ghost_enrollments_are_not_accepted(tmp_path: Path) -> None:
    registry = EnrollmentRegistry(tmp_path / "enrollment.json", max_pending=500)
    async with plain_fleet(tmp_path, {"north": ["d0"]}) as (service, _):
        service.registry = service.controller.registry = service.verifier.registry = registry
        registry.pin("north", "d0", _[0].public_key)
        ghost_key = DeviceKey()
        statuses: dict[str, int] = {}
        over_the_bus = await asyncio.gather(*(service.bus.query(keys.enroll("north", f"ghost-{i}"),
                                                                enroll_request(ghost_key, "north", f"ghost-{i}"))
                                              for i in range(200)))
        for replies in over_the_bus:
            status = replies[0][1]["status"]
            statuses[status] = statuses.get(status, 0) + 1
        for i in range(200, 20_000):  # the rest straight into the handler (the bus adds nothing but time)
            reply = await service._on_enroll(keys.enroll("north", f"ghost-{i}"),
                                             enroll_request(ghost_key, "north", f"ghost-{i}"))
            statuses[reply["status"]] = statuses.get(reply["status"], 0) + 1
        assert statuses.get("enrolled", 0) == 0 and len(registry.pending) <= 500
        assert statuses["refused"] >= 19_500
        assert len(json.loads((tmp_path / "enrollment.json").read_bytes())["pending"]) <= 500
        await quiet(1.0)
        overview = service.overview()
        assert overview["online"] == 1 and overview["enrolled"] == 1 and overview["alerts"] == 0
        # A device with a one-time token still gets in during the flood; its key is then pinned.
        real = DeviceKey()
        token = registry.issue_token(60, "north")
        assert (await service._on_enroll(keys.enroll("north", "new-1"), enroll_request(real, "north", "new-1", token))
                )["status"] == "enrolled"
        other = await service._on_enroll(keys.enroll("north", "new-1"), enroll_request(DeviceKey(), "north", "new-1"))
        assert other["reason"] == "key_conflict"
        forged = enroll_request(real, "north", "new-2")
        forged["signed"]["body"]["public_key"] = DeviceKey().public_b64  # not signed by the key it enrolls
        assert (await service._on_enroll(keys.enroll("north", "new-2"), forged))["status"] == "refused"
        wrong_site = await service._on_enroll(keys.enroll("south", "new-3"), enroll_request(real, "north", "new-3"))
        assert wrong_site["status"] == "refused"


def test_operator_approval_pins_the_key_across_processes(tmp_path: Path) -> None:
    fleet_dir = FleetDir(tmp_path / "fleet")
    fleet_dir.init()
    controller_view = EnrollmentRegistry(fleet_dir.enrollment)
    device = DeviceKey()
    assert controller_view.request("north", "d9", device.public_b64) == "pending"
    assert not controller_view.is_enrolled("north", "d9")
    from openmos.cli.main import main

    assert main(["fleet", "approve", str(fleet_dir.root), "north/d9"]) == 0  # another process, same file
    controller_view.refresh(force=True)
    assert controller_view.is_enrolled("north", "d9")
    with pytest.raises(Exception, match="another key"):
        controller_view.request("north", "d9", DeviceKey().public_b64)
    assert main(["fleet", "revoke", str(fleet_dir.root), "north/d9"]) == 0
    controller_view.refresh(force=True)
    assert controller_view.key_for("north", "d9") is None
    for path in (fleet_dir.ca_key, fleet_dir.controller_key, fleet_dir.command_key):
        assert path.stat().st_mode & 0o077 == 0, path
    with pytest.raises(FileExistsError):
        fleet_dir.init()


# -- shutdown and the demo ----------------------------------------------------------------------------------


async def test_clean_shutdown_during_a_flood(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    store = f"sqlite:///{tmp_path / 'fleet.db'}"
    async with tls_fleet(tmp_path, {"north": [f"d{i}" for i in range(20)]}, store=store) as fleet:
        service = fleet.service
        await wait_for(lambda: len(service.latest) == 20, 20, "telemetry")
        stop = threading.Event()
        flooders = [fleet.nodes[i] for i in range(5)]
        ghost = DeviceKey()

        def flood() -> None:  # zenoh puts from a thread, as fast as they go
            seq = 0
            while not stop.is_set():
                for node in flooders:
                    fleet.site_bus.publish(keys.telemetry("north", node.device.device_id),
                                           node.sign("telemetry", node.device.status()))
                seq += 1
                fleet.site_bus.publish(keys.telemetry("north", f"ghost-{seq}"),
                                       attacker_telemetry(ghost, "north", f"ghost-{seq}", {}, seq))

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        def dashboard_reads() -> None:
            for _ in range(50):
                with contextlib.suppress(RuntimeError):  # "the fleet store is closed" once stop() ran
                    service.store.totals_series(300, 0)

        reader = asyncio.create_task(asyncio.to_thread(dashboard_reads))
        await wait_for(lambda: dropped(service, "not_enrolled") > 500, 30, "the flood to arrive")
        await asyncio.wait_for(service.stop(), 30)  # under load: no hang, no nested transaction
        stop.set()
        for t in threads:
            t.join(10)
        await asyncio.gather(reader, return_exceptions=True)
    assert not [r for r in caplog.records if "transaction" in r.getMessage() or r.exc_info]


async def test_demo_leaves_no_key_material_and_gives_independent_passwords(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from openmos.cli.fleet import run_demo

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    console = Console(record=True, width=300)
    await run_demo(30, free_local_port(), 3.0, console)
    text = console.export_text()
    found = re.search(r"admin / (\S+)\s+and\s+approver / (\S+)", text)
    assert found, text
    admin, approver = found.groups()
    assert len(admin) >= 16 and len(approver) >= 16 and admin not in approver and approver not in admin
    assert "30 enrolled" in text and "mutual TLS" in text
    assert list(scratch.iterdir()) == []  # nothing left behind, keys were never written


def test_a_host_matches_query_key_expressions_to_its_devices_only() -> None:
    bus = FleetBus(BusConfig())
    host = DeviceHost(bus, "north")
    for name in ("a1", "a2"):
        host.add(DeviceNode(bus, "north", SimulatedFleetDevice(name), []))

    def match(selector: str) -> list[tuple[str, str]]:
        return [(node.device.device_id, leaf) for node, leaf in host.match(selector)]

    assert match("openmos/north/dev/a1/cmd/pause") == [("a1", "cmd/pause")]
    assert match("openmos/*/dev/*/status") == [("a1", "status"), ("a2", "status")]
    assert len(match("openmos/north/dev/**")) == 2 * (3 + len(keys_of_actions()))
    assert match("openmos/north/dev/*/telemetry") == [("a1", "telemetry"), ("a2", "telemetry")]
    assert {leaf for _, leaf in match("openmos/north/dev/a2/cmd/*")} == {f"cmd/{a}" for a in keys_of_actions()}
    assert match("openmos/north/dev/a$*/inventory") == [("a1", "inventory"), ("a2", "inventory")]
    for elsewhere in ("openmos/south/dev/*/status", "openmos/north/dev/a9/status", "openmos/north/dev/a1/cmd/rm",
                      "openmos/north/dev/a1/status/extra", "openmos//dev", "not a key expression ?*", "x" * 5000):
        assert match(elsewhere) == []
    with pytest.raises(ValueError):
        host.add(DeviceNode(bus, "north", SimulatedFleetDevice("a1"), []))  # one id, one device
    with pytest.raises(ValueError):
        host.add(DeviceNode(bus, "south", SimulatedFleetDevice("b1"), []))  # another site's device


def keys_of_actions() -> tuple[str, ...]:
    from openmos.fleet.messages import DEVICE_ACTIONS

    return DEVICE_ACTIONS
