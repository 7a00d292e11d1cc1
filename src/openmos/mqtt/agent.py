"""The OpenMOS agent as an MQTT device: its control surface plus the readings the surface does not carry
(share counters, per-board temperatures), read through the agent's own methods in this one adapter."""

from __future__ import annotations

import math
import socket
from typing import Any

from openmos.miner.agent import MiningAgent
from openmos.miner.control import AgentControl
from openmos.mqtt.bridge import DeviceSource, MqttBridge
from openmos.mqtt.topics import MAX_BOARDS
from openmos.tuning.targets import PRESETS, TargetKind


def agent_readings(agent: MiningAgent) -> dict[str, Any]:
    conns = [c for g in agent.pools.groups for c in g.connections]
    doc: dict[str, Any] = {"accepted": sum(c.counters.accepted for c in conns),
                           "rejected": sum(c.counters.rejected for c in conns)}
    tuner, limits = agent.tuner, agent.hardware.limits()
    if tuner is not None and tuner.base_target.kind is TargetKind.POWER:
        watts = tuner.base_target.value
        doc["power_target_w"] = watts
        nameplate = limits.nameplate_power_w if limits else None
        doc["profile"] = next((name for name, frac in PRESETS.items() if nameplate and round(frac * nameplate)
                               == round(watts)), "custom")
    for board in agent.telemetry().boards[:MAX_BOARDS]:
        temps = [t for t in (board.chip_temperatures_c or board.temperatures_c) if math.isfinite(t)]
        if temps:
            doc[f"board{board.index}_c"] = round(max(temps), 1)
    return doc


def agent_source(agent: MiningAgent, device_id: str | None = None,
                 control: AgentControl | None = None) -> DeviceSource:
    control = control or AgentControl(agent, device_id or agent.config.mqtt.device_id or socket.gethostname())
    limits = agent.hardware.limits()
    return DeviceSource(control, lambda: agent_readings(agent), limits.nameplate_power_w if limits else None)


def agent_bridge(agent: MiningAgent) -> MqttBridge | None:
    """The bridge ``[mqtt]`` in the agent config asks for, or None when MQTT is off."""
    cfg = agent.config.mqtt
    if not cfg.host:
        return None
    source = agent_source(agent)
    return MqttBridge(cfg, [source], node=source.control.device_id)
