"""Predictive maintenance where operators see it: device REST endpoint and web page, MQTT / Home Assistant
(Debian's mosquitto), fleet telemetry (signed, strict schema) and the fleet dashboard's maintenance queue."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from mosquitto import MOSQUITTO, Broker
from openmos.api.auth import AuthStore
from openmos.base.net import free_local_port
from openmos.control import DeviceData, DeviceInfo, MaintenanceFlag, MaintenanceInfo, RunState, to_wire
from openmos.fleet.alerts import AlertEngine
from openmos.fleet.bus import BusConfig
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.messages import DeviceStatus
from openmos.fleet.node import DeviceHost, DeviceNode
from openmos.fleet.service import FleetService
from openmos.fleet.web.app import create_fleet_app
from openmos.hw.sim.backend import SimHardware
from openmos.hw.sim.precursors import Failure, Mode
from openmos.maintenance import MaintenanceMonitor
from openmos.miner.control import AgentControl
from openmos.mqtt.topics import Topics, discovery_documents, state_document
from openmos.security.signing import generate_keypair

from api_stack import running_device
from helpers import wait_for

DAY = 86400.0


def monitor_with_a_wearing_fan(fan: int = 2, days: float = 3.0) -> MaintenanceMonitor:
    """A simulated S21 whose fan bearing starts wearing after half a day (fails on day 8), read through its
    telemetry every 5 simulated minutes for ``days``."""
    hw = SimHardware("s21", seed=5)
    fleet = hw.oracle_view()
    fleet.schedule_failures([Failure(Mode.FAN_BEARING, 0, None, fan, 0.5 * DAY, 8 * DAY)])
    monitor = MaintenanceMonitor()
    for _ in range(int(days * DAY / monitor.sample_s)):
        fleet.step(monitor.sample_s)
        monitor.observe(hw.telemetry(), fleet.time)
    return monitor


@pytest.fixture(scope="module")
def wearing() -> MaintenanceMonitor:
    return monitor_with_a_wearing_fan()


def test_the_monitor_reports_the_fan_with_its_reason_and_lead(wearing: MaintenanceMonitor) -> None:
    report = wearing.report()
    assert report["problem"] and report["warm"] and report["modelled"]
    fans = [f for f in report["findings"] if f["component"] == "fan"]
    assert fans and {f["index"] for f in fans} == {2}
    assert "slower" in fans[0]["reason"] or "jitter" in fans[0]["reason"]
    assert fans[0]["value"] >= fans[0]["band"] and fans[0]["lead_time_h"] is not None
    assert all(f["component"] == "fan" for f in report["findings"])  # nothing else is flagged
    assert json.loads(json.dumps(report, allow_nan=False)) == report  # strict JSON


async def test_rest_endpoint_and_device_page(wearing: MaintenanceMonitor) -> None:
    async with running_device() as stack, httpx.AsyncClient(base_url=stack.rest_url, timeout=30) as client:
        fresh = (await client.get("/api/v1/maintenance")).json()
        assert fresh["problem"] is False and fresh["modelled"] is True and fresh["findings"] == []
        stack.agent.maintenance = wearing  # three simulated days of a wearing fan
        doc = (await client.get("/api/v1/maintenance")).json()
        assert doc["problem"] and doc["findings"][0]["component"] == "fan"
        assert "/api/v1/maintenance" in (await client.get("/openapi.json")).json()["paths"]
        page = (await client.get("/")).text
        assert 'id="maintenance"' in page
        assert "/api/v1/maintenance" in (await client.get("/static/app.js")).text
        # The control surface carries the summary to the fleet, and it passes the fleet's strict schema.
        data = AgentControl(stack.agent, "rig").get_data()
        assert data.maintenance is not None and data.maintenance.problem
        status = DeviceStatus.model_validate(json.loads(json.dumps(to_wire(data))))
        assert status.maintenance is not None and status.maintenance.flags[0].component == "fan"


def data_with(maintenance: MaintenanceInfo | None) -> DeviceData:
    return DeviceData("rig", RunState.MINING, 200.0, 3500.0, 70.0, fans_rpm=(5000, 5000, 3000, 5000),
                      maintenance=maintenance, modelled=True)


INFO = MaintenanceInfo(True, "1 component flagged", (MaintenanceFlag("fan", None, 2, "turns 20% slower", 3.3, 96.0),),
                       96.0, True, True)


def test_mqtt_documents_carry_a_problem_sensor_with_the_reason() -> None:
    topics = Topics("openmos", "homeassistant", "rig")
    docs = dict(discovery_documents(topics, "rig", _info(), data_with(INFO), {}, controls=False, target=False,
                                    max_power_w=None))
    config = docs["homeassistant/binary_sensor/openmos_rig/maintenance/config"]
    assert config["device_class"] == "problem" and config["json_attributes_topic"] == "openmos/rig/state"
    state = state_document(data_with(INFO))
    assert state["maintenance_problem"] == "ON"
    assert state["maintenance"]["flags"][0]["reason"] == "turns 20% slower"
    # No model on the device: no entity, no state keys (third-party miners through pyasic).
    none = dict(discovery_documents(topics, "rig", _info(), data_with(None), {}, controls=False, target=False,
                                    max_power_w=None))
    assert not any("maintenance" in t for t in none) and "maintenance" not in state_document(data_with(None))


def _info() -> DeviceInfo:
    return DeviceInfo("rig", "Antminer S21 (simulated)", "OpenMOS")


@pytest.mark.skipif(MOSQUITTO is None, reason="Debian mosquitto not installed (make browser)")
async def test_home_assistant_sees_the_maintenance_problem(tmp_path: Path, wearing: MaintenanceMonitor) -> None:
    import aiomqtt

    from openmos.miner import AgentConfig, MiningAgent
    from openmos.miner.config import MqttConfig
    from openmos.mqtt.agent import agent_source
    from openmos.mqtt.bridge import MqttBridge

    broker = Broker(tmp_path / "broker")
    config = AgentConfig.from_dict({"hardware": "sim:s21", "groups": [{"pools": [
        {"url": "stratum+tcp://127.0.0.1:1", "user": "idle"}]}]})
    agent = MiningAgent(config, SimHardware("s21", seed=6))
    agent.maintenance = wearing
    bridge = MqttBridge(MqttConfig(host="127.0.0.1", port=broker.port, interval_s=1.0),
                        [agent_source(agent, "rig-9")], node="rig-9")
    seen: dict[str, bytes] = {}
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port) as ha:
            await ha.subscribe("#")
            await bridge.start()

            async def collect() -> None:
                async for m in ha.messages:
                    seen[m.topic.value] = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
                    if "openmos/rig-9/state" in seen and any("maintenance/config" in t for t in seen):
                        return
            await asyncio.wait_for(collect(), 60)
    finally:
        await bridge.stop()
        broker.stop()
    config_doc = json.loads(seen["homeassistant/binary_sensor/openmos_rig-9/maintenance/config"])
    assert config_doc["device_class"] == "problem"
    state = json.loads(seen["openmos/rig-9/state"])
    assert state["maintenance_problem"] == "ON" and state["maintenance"]["flags"][0]["component"] == "fan"


HOSTILE_MAINTENANCE: list[Any] = [
    {"problem": True, "min_lead_time_h": math.nan},
    {"problem": True, "min_lead_time_h": 1e400},
    {"problem": True, "min_lead_time_h": -5.0},
    {"problem": "yes"},
    {"problem": True, "summary": "x" * 10_000},
    {"problem": True, "flags": [{"component": "fan", "reason": "r"}] * 9},
    {"problem": True, "flags": [{"component": "<script>", "reason": "r"}]},
    {"problem": True, "flags": [{"component": "chip", "board": -1}]},
    {"problem": True, "flags": [{"component": "chip", "score": math.inf}]},
    {"problem": True, "flags": [{"component": "chip", "reason": "y" * 201}]},
    {"problem": True, "flags": {"component": "chip"}},
    {"problem": True, "flags": [[[[[[[[[[[]]]]]]]]]]]},
    "ON",
]


@pytest.mark.parametrize("hostile", HOSTILE_MAINTENANCE)
def test_fleet_schema_refuses_hostile_maintenance(hostile: Any) -> None:
    with pytest.raises(ValidationError):
        DeviceStatus.model_validate({"hashrate_ths": 1.0, "maintenance": hostile})


class _Adapter:
    """A device on the bus whose status carries a maintenance summary (or a hostile one)."""

    def __init__(self, device_id: str, maintenance: Any) -> None:
        self.device_id = device_id
        self.maintenance = maintenance

    def inventory(self) -> dict[str, Any]:
        return {"model": "Antminer S21 (simulated)"}

    def status(self) -> dict[str, Any]:
        return {"hashrate_ths": 200.0, "power_w": 3500.0, "modelled": True, "maintenance": self.maintenance}

    async def act(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": "not here"}


def flag(component: str, lead: float | None, score: float, index: int = 0) -> dict[str, Any]:
    return {"component": component, "board": None, "index": index, "reason": f"{component} out of band",
            "score": score, "lead_time_h": lead}


async def test_fleet_maintenance_queue_from_signed_telemetry(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "fleet.pem", tmp_path / "fleet.pub")
    service = FleetService(BusConfig(listen=[f"tcp/127.0.0.1:{free_local_port()}"]),
                           f"sqlite:///{tmp_path / 'fleet.db'}", (tmp_path / "fleet.pem").read_bytes(),
                           tmp_path / "audit.jsonl", inventory_interval_s=1, flush_interval_s=0.3,
                           registry=EnrollmentRegistry(None))
    await service.start()
    devices = [
        _Adapter("rig-a", {"problem": True, "summary": "fan", "modelled": True,
                           "flags": [flag("fan", 120.0, 2.0, 1), flag("psu", None, 5.0)]}),
        _Adapter("rig-b", {"problem": True, "summary": "chip", "flags": [flag("chip", 30.0, 1.5, 7)]}),
        _Adapter("rig-c", {"problem": True, "summary": "evil", "flags": [flag("chip", math.nan, 1.0)]}),
    ]
    host = DeviceHost(service.bus, "site-1")
    for d in devices:
        node = DeviceNode(service.bus, "site-1", d, [(tmp_path / "fleet.pub").read_bytes()], interval_s=0.5)
        host.add(node)
        service.registry.pin("site-1", node.device.device_id, node.public_key)
    await host.start()
    try:
        await wait_for(lambda: {("site-1", "rig-a"), ("site-1", "rig-b")} <= set(service.latest), 30,
                       "telemetry of the honest devices")
        await wait_for(lambda: service.bus.metrics.snapshot()["dropped"].get("schema", 0) > 0, 30,
                       "the hostile device's telemetry dropped")
        assert ("site-1", "rig-c") not in service.latest  # NaN lead time: refused, never shown
        app = create_fleet_app(service, AuthStore(None))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            queue = (await c.get("/api/fleet/maintenance")).json()
            assert [(q["device"], q["component"]) for q in queue] == [("rig-b", "chip"), ("rig-a", "fan"),
                                                                       ("rig-a", "psu")]
            assert queue[1]["modelled"] is True and queue[0]["reason"] == "chip out of band"
            assert (await c.get("/api/fleet/maintenance", params={"limit": 10**9})).status_code == 422
            assert len((await c.get("/api/fleet/maintenance", params={"limit": 1})).json()) == 1
            assert 'id="maintenance"' in (await c.get("/")).text
    finally:
        await host.stop()
        await service.stop()


def test_fleet_alert_from_a_maintenance_flag() -> None:
    engine = AlertEngine()
    status = {"hashrate_ths": 200.0, "maintenance": {"problem": True, "summary": "fan 2 slowing",
                                                     "min_lead_time_h": 96.0}}
    engine.observe(("s", "rig"), status, now=0.0)
    raised, _ = engine.evaluate(now=1.0)
    assert [(a.kind, a.severity, a.message) for a in raised] == [("maintenance", "warning", "fan 2 slowing")]
    engine.observe(("s", "rig"), {**status, "maintenance": {**status["maintenance"], "min_lead_time_h": 6.0}},
                   now=2.0)
    engine.evaluate(now=3.0)
    assert engine.active[("s", "rig", "maintenance")].kind == "maintenance"
    engine.observe(("s", "rig"), {"hashrate_ths": 200.0, "maintenance": {"problem": False}}, now=4.0)
    _, cleared = engine.evaluate(now=5.0)
    assert [a.kind for a in cleared] == ["maintenance"]
