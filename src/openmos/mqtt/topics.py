"""Topic layout and Home Assistant discovery documents (pure functions; docs/mqtt.md describes them).

- ``{base}/bridge/{node}/availability``: ``online`` / ``offline`` (retained; ``offline`` is the last will)
- ``{base}/{device}/state``: one JSON document with every reading (retained)
- ``{base}/{device}/{control}/set``: commands (``mining``: ON/OFF, ``power_target``: watts,
  ``profile``: eco/balanced/performance, ``locate``: PRESS)
- ``{base}/{device}/result``: the answer to the last command (ok, error)
- ``{prefix}/{component}/openmos_{device}/{object}/config``: discovery (retained)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from openmos.control import DeviceData, DeviceInfo

PROFILES = ("eco", "balanced", "performance")
CONTROLS = ("mining", "power_target", "profile", "locate")
MAX_FANS = 8
MAX_BOARDS = 8


def slug(text: str, limit: int = 48) -> str:
    """A topic- and entity-safe id: no ``/``, ``+``, ``#`` or control characters can reach a topic."""
    out = re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_")[:limit]
    return out or "device"


@dataclass(frozen=True)
class Topics:
    base: str
    prefix: str
    node: str

    @property
    def availability(self) -> str:
        return f"{self.base}/bridge/{self.node}/availability"

    def state(self, device: str) -> str:
        return f"{self.base}/{device}/state"

    def command(self, device: str, control: str) -> str:
        return f"{self.base}/{device}/{control}/set"

    def result(self, device: str) -> str:
        return f"{self.base}/{device}/result"

    def command_filter(self) -> str:
        return f"{self.base}/+/+/set"

    def discovery(self, component: str, device: str, obj: str) -> str:
        return f"{self.prefix}/{component}/openmos_{device}/{obj}/config"


def _finite(x: float | None, digits: int = 4) -> float | None:
    """``digits`` significant digits (a CPU's 5e-7 TH/s must not round to 0); None for NaN/inf/missing."""
    return float(f"{x:.{digits}g}") if x is not None and math.isfinite(x) else None


def state_document(data: DeviceData, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``{base}/{device}/state`` carries. Figures from simulated hardware are flagged ``modelled``."""
    hashrate = _finite(data.hashrate_ths, 6)
    power = _finite(data.power_w)
    efficiency = _finite(power / hashrate) if power and hashrate and hashrate > 0 else None
    active = next((p for p in data.pools if p.active), None)
    doc: dict[str, Any] = {
        "hashrate_ths": hashrate, "power_w": power, "efficiency_jth": efficiency,
        "hottest_c": _finite(data.hottest_c), "state": data.state.value, "healthy": data.healthy,
        "mining": "ON" if data.state.value in ("mining", "curtailed") else "OFF",
        "pool": active.url if active else None, "target": data.target, "locate": data.locate,
        "modelled": data.modelled, "message": data.message[:200],
    }
    for i, rpm in enumerate(data.fans_rpm[:MAX_FANS]):
        doc[f"fan{i}_rpm"] = rpm
    m = data.maintenance
    if m is not None:
        doc["maintenance_problem"] = "ON" if m.problem else "OFF"
        doc["maintenance"] = {
            "summary": m.summary[:300], "min_lead_time_h": _finite(m.min_lead_time_h), "warm": m.warm,
            "modelled": m.modelled,
            "flags": [{"component": f.component, "board": f.board, "index": f.index, "reason": f.reason[:200],
                       "score": _finite(f.score), "lead_time_h": _finite(f.lead_time_h)} for f in m.flags[:8]]}
    doc.update(extra or {})
    return doc


def _device_block(info: DeviceInfo, device: str) -> dict[str, Any]:
    return {"identifiers": [f"openmos_{device}"], "name": info.name or info.device_id, "model": info.model,
            "manufacturer": "OpenMOS", "sw_version": info.firmware}


def discovery_documents(topics: Topics, device: str, info: DeviceInfo, data: DeviceData, extra: dict[str, Any],
                        *, controls: bool, target: bool, max_power_w: float | None
                        ) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) for every entity of one device. Controls are announced only when the bridge may
    obey them (role ``operator``); target controls only where the device has an autotuner."""
    dev = _device_block(info, device)
    state = topics.state(device)
    common = {"availability_topic": topics.availability, "device": dev, "state_topic": state}

    def sensor(obj: str, name: str, key: str, **kw: Any) -> tuple[str, dict[str, Any]]:
        return topics.discovery("sensor", device, obj), {
            **common, "name": name, "unique_id": f"openmos_{device}_{obj}",
            "value_template": f"{{{{ value_json.{key} }}}}", **kw}

    docs = [
        sensor("hashrate", "Hashrate", "hashrate_ths", unit_of_measurement="TH/s", state_class="measurement",
               icon="mdi:pickaxe"),
        sensor("power", "Power", "power_w", unit_of_measurement="W", device_class="power",
               state_class="measurement"),
        sensor("efficiency", "Efficiency", "efficiency_jth", unit_of_measurement="J/TH", state_class="measurement"),
        sensor("temperature", "Hottest temperature", "hottest_c", unit_of_measurement="°C",
               device_class="temperature", state_class="measurement"),
        sensor("pool", "Active pool", "pool", icon="mdi:server-network"),
        sensor("state", "State", "state"),
        sensor("accepted", "Accepted shares", "accepted", state_class="total_increasing"),
        sensor("rejected", "Rejected shares", "rejected", state_class="total_increasing"),
    ]
    for i in range(min(len(data.fans_rpm), MAX_FANS)):
        docs.append(sensor(f"fan{i}", f"Fan {i}", f"fan{i}_rpm", unit_of_measurement="RPM", icon="mdi:fan",
                           state_class="measurement"))
    for i in range(MAX_BOARDS):
        if f"board{i}_c" in extra:
            docs.append(sensor(f"board{i}_temperature", f"Board {i} temperature", f"board{i}_c",
                               unit_of_measurement="°C", device_class="temperature", state_class="measurement"))
    docs.append((topics.discovery("binary_sensor", device, "health"), {
        **common, "name": "Problem", "unique_id": f"openmos_{device}_health", "device_class": "problem",
        "value_template": "{{ 'OFF' if value_json.healthy else 'ON' }}"}))
    if data.maintenance is not None:
        docs.append((topics.discovery("binary_sensor", device, "maintenance"), {
            **common, "name": "Maintenance needed", "unique_id": f"openmos_{device}_maintenance",
            "device_class": "problem", "icon": "mdi:wrench-clock",
            "value_template": "{{ value_json.maintenance_problem | default('OFF') }}",
            "json_attributes_topic": state,
            "json_attributes_template": "{{ value_json.maintenance | default({}) | tojson }}"}))
        docs.append(sensor("maintenance_lead", "Maintenance lead time (estimate)",
                           "maintenance.min_lead_time_h | default(None)", unit_of_measurement="h",
                           device_class="duration", icon="mdi:timer-sand"))
    if controls:
        docs.append((topics.discovery("switch", device, "mining"), {
            **common, "name": "Mining", "unique_id": f"openmos_{device}_mining", "icon": "mdi:pickaxe",
            "command_topic": topics.command(device, "mining"), "value_template": "{{ value_json.mining }}",
            "payload_on": "ON", "payload_off": "OFF"}))
        docs.append((topics.discovery("button", device, "locate"), {
            "availability_topic": topics.availability, "device": dev, "name": "Locate",
            "unique_id": f"openmos_{device}_locate", "command_topic": topics.command(device, "locate"),
            "payload_press": "PRESS", "icon": "mdi:led-on"}))
        if target:
            docs.append((topics.discovery("number", device, "power_target"), {
                **common, "name": "Power target", "unique_id": f"openmos_{device}_power_target",
                "command_topic": topics.command(device, "power_target"), "unit_of_measurement": "W",
                "device_class": "power", "min": 1, "max": max_power_w or 10_000, "step": 1, "mode": "box",
                "value_template": "{{ value_json.power_target_w | default(None) }}"}))
            docs.append((topics.discovery("select", device, "profile"), {
                **common, "name": "Profile", "unique_id": f"openmos_{device}_profile",
                "command_topic": topics.command(device, "profile"), "options": [*PROFILES, "custom"],
                "value_template": "{{ value_json.profile | default('balanced') }}"}))
    return docs
