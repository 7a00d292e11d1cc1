"""The LuxOS dialect of the cgminer API (Luxor's published API), as far as OpenMOS answers it.

Why: it is the one dialect stock pyasic (0.79) reads in full over port 4028 for current Antminer models --
hashrate, power, boards, temperatures, fans, pools -- so pyasic and the tools built on it see an OpenMOS
device without a class from this project. What: the version row names the dialect (pyasic's detection looks
for "LUXminer"), ``stats`` has the two-row form with ``temp_chip``/``temp_pcb`` strings, ``profiles`` lists
the running target and this model's presets, and sessions (``logon``) gate ``curtail``/``profileset`` like
LuxOS does. The firmware reported stays OpenMOS.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

from openmos.api.cgminer.protocol import ACCESS_DENIED, INVALID_PARAMETER, BadRequest
from openmos.api.view import DeviceView
from openmos.tuning import PerformanceTarget, TargetKind
from openmos.tuning.targets import PRESETS

DIALECT = "LUXminer-compatible cgminer API, served by OpenMOS"
SESSION_TTL_S = 600.0
MAX_SESSIONS = 16


def mean(values: list[float | None]) -> float:
    nums = [v for v in values if v is not None]
    return sum(nums) / len(nums) if nums else 0.0


def four_positions(values: list[float]) -> str:
    """The hottest reading, in whole degrees, at four sensor positions ("a-b-c-d"; 0 without sensors):
    what readers of this dialect average into one board and one chip temperature."""
    hottest = max((v for v in values if math.isfinite(v)), default=0.0)
    return "-".join([str(round(hottest))] * 4)


def profile_rows(view: DeviceView) -> list[dict[str, Any]]:
    """The running target first (the active profile), then the presets of this model."""
    agent = view.agent
    tuner = agent.tuner
    limits = agent.hardware.limits()
    nameplate = (limits.nameplate_power_w or 0.0) if limits else 0.0
    boards = view.boards()
    freqs: list[float | None] = [c.frequency_mhz for b in boards for c in b.chips if c.frequency_mhz]
    volts: list[float | None] = [b.voltage_v for b in boards if b.voltage_v]
    ths = agent.telemetry().nominal_hashrate_ths or 0.0

    def row(name: str, watts: float | None, tuned: bool) -> dict[str, Any]:
        return {"Profile Name": name, "Watts": round(watts) if watts else 0,
                "Hashrate": round(ths * (watts or nameplate) / nameplate, 2) if nameplate and ths else 0.0,
                "IsTuned": tuned, "Frequency": round(mean(freqs)), "Voltage": round(mean(volts), 3), "Step": "0"}

    current = row("default", nameplate or None, False)
    if tuner is not None:
        target = tuner.base_target
        watts = target.value if target.kind is TargetKind.POWER else view.control.full_power_w()
        current = row("target", watts, tuner.status.state.value == "stable")
    presets = [row(name, PerformanceTarget.preset(name, nameplate).value, False)
               for name in PRESETS] if nameplate else []
    return [current, *presets]


class Sessions:
    """LuxOS-style sessions: ``logon`` (a privileged command, so only allow-listed hosts get one) returns an
    id that ``curtail`` and ``profileset`` carry as their first parameter. Bounded in number and lifetime."""

    def __init__(self) -> None:
        self._expires: dict[str, float] = {}

    def open(self) -> str:
        now = time.time()
        self._expires = {t: exp for t, exp in self._expires.items() if exp > now}
        if len(self._expires) >= MAX_SESSIONS:
            raise BadRequest(INVALID_PARAMETER, "too many open sessions; log off first")
        token = secrets.token_hex(8)
        self._expires[token] = now + SESSION_TTL_S
        return token

    def close(self, parameter: str | None) -> None:
        self._expires.pop((parameter or "").split(",")[0].strip(), None)

    def arguments(self, parameter: str | None, command: str) -> list[str]:
        """The arguments after a valid session id (ACCESS_DENIED without one)."""
        parts = [x.strip() for x in (parameter or "").split(",")]
        if self._expires.get(parts[0], 0.0) < time.time():
            raise BadRequest(ACCESS_DENIED, f"{command} needs a session from logon")
        return parts[1:]
