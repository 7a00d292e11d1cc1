"""Strict schemas (pydantic) for every message on the fleet bus.

A message that does not validate is dropped and counted by reason (``BusMetrics``), never stored or shown:
no string where a number belongs, no NaN or infinity, no negative power, bounded lists, strings and maps.
Unknown fields in a device's status or inventory are dropped, so only what is described here reaches the
store and the dashboard.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_PAYLOAD = 64 * 1024  # bytes: a status document is ~400 B
MAX_EVENT_BATCH = 100  # signed device events per host publication (~350 B each: well under MAX_PAYLOAD)
# A telemetry poll is answered with the device's last signed telemetry snapshot while it is younger than
# SNAPSHOT_FRESH_S (device clock, else a new one is signed); the controller believes the same snapshot again for
# SNAPSHOT_REREAD_S after it first believed it (its own clock), so a copy of a dead device's last snapshot is
# refused from then on.
SNAPSHOT_FRESH_S = 5.0
SNAPSHOT_REREAD_S = 15.0
CHUNK = r"^[A-Za-z0-9_.-]{1,64}$"

Chunk = Annotated[str, Field(pattern=CHUNK)]
Text = Annotated[str, Field(max_length=128)]
Ths = Annotated[float, Field(ge=0, le=10_000, allow_inf_nan=False)]  # one device: at most 10 PH/s
Watts = Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)]
Celsius = Annotated[float, Field(ge=-60, le=250, allow_inf_nan=False)]
Unix = Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]
Nonce = Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
DEVICE_ACTIONS = ("pause", "resume", "set_power", "set_pools", "reboot", "locate", "install", "scan", "curtail",
                  "sleep")
Action = Literal["pause", "resume", "set_power", "set_pools", "reboot", "locate", "install", "scan", "curtail",
                 "sleep"]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _Lenient(BaseModel):
    """Strict types, but unknown fields are dropped (a newer device may report more)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class PoolEntry(_Lenient):
    url: Annotated[str, Field(max_length=256)]
    user: Annotated[str, Field(max_length=128)] = ""


class MaintenanceFlagEntry(_Lenient):
    """One component a device's predictive-maintenance model expects to fail."""

    component: Literal["chip", "board", "vr", "fan", "psu", "sensor"]
    board: Annotated[int, Field(ge=0, le=64)] | None = None
    index: Annotated[int, Field(ge=0, le=100_000)] | None = None
    reason: Annotated[str, Field(max_length=200)] = ""
    score: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] | None = None
    lead_time_h: Annotated[float, Field(ge=0, le=1e5, allow_inf_nan=False)] | None = None


class MaintenanceStatus(_Lenient):
    problem: bool = False
    summary: Annotated[str, Field(max_length=300)] = ""
    flags: Annotated[list[MaintenanceFlagEntry], Field(max_length=8)] = []
    min_lead_time_h: Annotated[float, Field(ge=0, le=1e5, allow_inf_nan=False)] | None = None
    warm: bool = False
    modelled: bool = False


class DeviceStatus(_Lenient):
    """Telemetry and the ``status`` query: what the store and the dashboard may show of a device."""

    hashrate_ths: Ths | None = None
    power_w: Watts | None = None
    hottest_c: Celsius | None = None
    paused: bool = False
    healthy: bool = True
    modelled: bool = False
    firmware: Text | None = None
    pools: Annotated[list[PoolEntry], Field(max_length=8)] = []
    fans_rpm: Annotated[list[Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] | None],
                        Field(max_length=16)] | None = None
    pool_url: Annotated[str, Field(max_length=256)] | None = None
    tuner: Text | None = None
    time: Unix | None = None
    state: Annotated[str, Field(max_length=32)] | None = None
    curtail_fraction: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    full_power_w: Watts | None = None
    target: Text | None = None
    locate: bool = False
    message: Annotated[str, Field(max_length=500)] | None = None
    maintenance: MaintenanceStatus | None = None  # predictive maintenance (signed with the rest)


def _check_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > 16 or any(len(k) > 32 or len(v) > 64 for k, v in tags.items()):
        raise ValueError("at most 16 tags, names up to 32 and values up to 64 characters")
    return tags


class CurveEntry(_Lenient):
    """One point of a device's efficiency curve (from its tuner)."""

    power_w: Watts
    hashrate_ths: Ths
    source: Annotated[str, Field(max_length=16)] = "measured"


class DeviceInventory(_Lenient):
    model: Text | None = None
    name: Text | None = None
    make: Text | None = None
    serial: Text | None = None
    mac: Text | None = None
    firmware: Text | None = None
    hostname: Text | None = None
    vendor_api: Text | None = None
    boards: Annotated[int, Field(ge=0, le=64)] | None = None
    chips: Annotated[int, Field(ge=0, le=100_000)] | None = None
    chips_per_board: Annotated[int, Field(ge=0, le=10_000)] | None = None
    tags: dict[str, str] = {}
    curve: Annotated[list[CurveEntry], Field(max_length=32)] = []

    _tags = field_validator("tags")(_check_tags)


class DeviceEvent(_Strict):
    """A device event: an acknowledgement of a site command, or a state change / finding."""

    ack: Nonce | None = None
    fraction: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    ok: bool | None = None
    # of an acknowledgement: "accepted" (verified, valid, queued), then "applied" (the control surface ran it,
    # ``ok`` says how) or "superseded" (a newer one came first); none: an older device's ack, sent once applied
    stage: Literal["accepted", "applied", "superseded"] | None = None
    event: Text | None = None
    message: Annotated[str, Field(max_length=500)] | None = None


class CommandReply(BaseModel):
    """A command's result: ``ok`` and an optional error; action-specific fields pass through (bounded by the
    payload size)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    ok: bool
    error: Annotated[str, Field(max_length=500)] | None = None


class EnrollBody(_Strict):
    public_key: Annotated[str, Field(min_length=40, max_length=64)]
    token: Annotated[str, Field(max_length=128)] | None = None
    csr: Annotated[str, Field(max_length=4096)] | None = None


Kind = Literal["telemetry", "event", "reply", "inventory", "status", "enroll"]


class DeviceDoc(_Strict):
    """The signed document of every device-originated message."""

    kind: Kind
    site: Chunk
    device: Chunk
    ts: Unix
    seq: Annotated[int, Field(ge=0, le=2**62)] = 0
    request: Nonce | None = None  # the query's nonce for replies (a reply answers exactly one query)
    body: dict[str, Any]


class CommandDoc(_Strict):
    """The signed document of every controller command (site and device inside the signature)."""

    site: Chunk
    device: Chunk | Literal["*"]
    action: Action
    args: dict[str, Any] = {}
    issued_at: Unix
    nonce: Nonce


BODIES: dict[str, type[BaseModel]] = {"telemetry": DeviceStatus, "status": DeviceStatus,
                                      "inventory": DeviceInventory, "event": DeviceEvent, "reply": CommandReply,
                                      "enroll": EnrollBody}


class MessageRejected(ValueError):
    """Why a bus message was dropped (``reason`` is the metrics label)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def check_size(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise MessageRejected("too_large", f"{len(payload)} bytes")
    return payload


def decode(payload: bytes) -> Any:
    """Bounded JSON decoding: size first, then a parse that cannot recurse without limit."""
    check_size(payload)
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        raise MessageRejected("not_json") from None


def body_of(doc: DeviceDoc) -> BaseModel:
    try:
        return BODIES[doc.kind].model_validate(doc.body)
    except ValidationError as exc:
        raise MessageRejected("schema", f"{doc.kind}: {exc.error_count()} error(s)") from None


def parse_device_doc(signed: dict[str, Any] | bytes) -> DeviceDoc:
    """The signed document, from its parsed form or straight from its JSON bytes (one parse, in pydantic)."""
    try:
        if isinstance(signed, bytes):
            if len(signed) > MAX_PAYLOAD:
                raise MessageRejected("too_large", f"{len(signed)} bytes")
            return DeviceDoc.model_validate_json(signed)
        return DeviceDoc.model_validate(signed)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors(include_url=False, include_context=False)):
            raise MessageRejected("not_json") from None
        raise MessageRejected("schema", f"{exc.error_count()} error(s)") from None


@dataclass
class BusMetrics:
    """Counters of accepted and dropped bus messages, by kind and by reason (thread-safe)."""

    accepted: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, kind: str) -> None:
        with self._lock:
            self.accepted[kind] += 1

    def drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"accepted": dict(self.accepted), "dropped": dict(self.dropped)}
