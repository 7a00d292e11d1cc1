"""Typed status objects of the control surface; ``to_wire`` is the only place they become dictionaries."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any


class RunState(StrEnum):
    MINING = "mining"  # at its full configured target
    CURTAILED = "curtailed"  # running at a fraction of it
    SLEEPING = "sleeping"  # energy asked for the lowest power
    PAUSED = "paused"  # operator hold
    PROTECTING = "protecting"  # the safety monitor shut it down (too hot, fans failed, sensors lost)
    UNAVAILABLE = "unavailable"  # not answering (third-party miners)


@dataclass(frozen=True)
class Capabilities:
    """What a device can do through the surface (the rest raises ``UnsupportedControl``)."""

    pause: bool = True
    sleep: bool = True
    curtail: bool = False  # fractions strictly between 0 and 1
    curtail_watts: bool = False  # knows its full power, so watts can be turned into a fraction
    target: bool = False
    pools: bool = False
    cooling: bool = False
    locate: bool = False
    reboot: bool = False
    frequency: bool = False


@dataclass(frozen=True)
class PoolInfo:
    url: str
    user: str
    active: bool | None = None


@dataclass(frozen=True)
class CurvePoint:
    """One point of a device's efficiency curve: what its tuner measured (or estimated from its chip model)."""

    power_w: float
    hashrate_ths: float
    source: str = "measured"  # measured | estimated | assumed (no tuner: flat J/TH from nameplate)


@dataclass(frozen=True)
class DeviceInfo:
    device_id: str
    model: str
    firmware: str
    name: str = ""
    serial: str | None = None
    mac: str | None = None
    hostname: str | None = None
    boards: int = 0
    chips: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    vendor_api: str | None = None  # for third-party miners: the pyasic class that drives them
    curve: tuple[CurvePoint, ...] = ()  # efficiency curve, sorted by power (empty: unknown)


@dataclass(frozen=True)
class MaintenanceFlag:
    """One component the predictive-maintenance model expects to fail, and why."""

    component: str  # chip / board / vr / fan / psu / sensor
    board: int | None
    index: int | None
    reason: str
    score: float  # how far out of band (1 = on the band)
    lead_time_h: float | None = None  # estimated time to failure (None: not extrapolable)


@dataclass(frozen=True)
class MaintenanceInfo:
    """The predictive-maintenance summary of a device (``modelled`` when its telemetry is simulated)."""

    problem: bool
    summary: str
    flags: tuple[MaintenanceFlag, ...] = ()
    min_lead_time_h: float | None = None
    warm: bool = False  # the model has learnt its baselines (a day of telemetry)
    modelled: bool = False


@dataclass(frozen=True)
class DeviceData:
    """One reading of a device: what fleets, energy, REST and cgminer report (``modelled`` when simulated)."""

    device_id: str
    state: RunState
    hashrate_ths: float
    power_w: float | None
    hottest_c: float | None = None
    curtail_fraction: float = 1.0
    full_power_w: float | None = None  # wall power at the uncurtailed target, if known
    fans_rpm: tuple[int, ...] = ()
    pools: tuple[PoolInfo, ...] = ()
    firmware: str | None = None
    target: str | None = None
    tuner: str | None = None
    locate: bool = False
    modelled: bool = False
    healthy: bool = True
    message: str = ""
    time: float = field(default_factory=time.time)
    maintenance: MaintenanceInfo | None = None

    @property
    def paused(self) -> bool:
        return self.state in (RunState.PAUSED, RunState.SLEEPING, RunState.PROTECTING)


@dataclass(frozen=True)
class Ack:
    """The answer to one command: which device, which command, whether it was done and the state after it."""

    device_id: str
    command: str
    ok: bool
    state: RunState
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # edge-only detail (e.g. an install's slots)


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def to_wire(obj: DeviceData | DeviceInfo | Ack | Capabilities) -> dict[str, Any]:
    """JSON-ready dictionary of a status object (for the bus, REST and cgminer edges only)."""
    doc: dict[str, Any] = _plain(obj)
    if isinstance(obj, DeviceData):
        doc["paused"] = obj.paused  # the fleet's historical flag
    return doc
