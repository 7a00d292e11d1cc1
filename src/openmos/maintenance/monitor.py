"""The health model on one device: sampled from the agent's telemetry, read by REST, MQTT, the web page and
the fleet's telemetry."""

from __future__ import annotations

import math
from typing import Any

from openmos.control import MaintenanceFlag, MaintenanceInfo
from openmos.hw.interface import HardwareTelemetry
from openmos.maintenance.model import Finding, HealthModel, Thresholds
from openmos.maintenance.snapshot import from_telemetry

SAMPLE_S = 300.0  # one telemetry sample every 5 minutes: the features live on hours and days
MAX_FINDINGS = 20
MAX_WIRE_FLAGS = 8  # on the fleet bus and MQTT


class MaintenanceMonitor:
    """Feeds the agent's telemetry to a ``HealthModel`` (restarted if the hardware's shape changes)."""

    def __init__(self, sample_s: float = SAMPLE_S, thresholds: Thresholds | None = None) -> None:
        self.sample_s = sample_s
        persist = max(1, math.ceil(3600.0 / sample_s))  # an hour above the band before a flag
        base = thresholds or Thresholds()
        self.thresholds = Thresholds(**{**base.__dict__, "persist": persist})
        self._model: HealthModel | None = None
        self._shape: tuple[tuple[int, int, int], int, int] | None = None
        self._last: float | None = None
        self.started_s: float | None = None
        self.modelled = False
        self.samples = 0

    def due(self, now_s: float) -> bool:
        return self._last is None or now_s - self._last >= self.sample_s

    def observe(self, tel: HardwareTelemetry, now_s: float) -> None:
        snap = from_telemetry(tel, now_s)
        shape = (snap.shape, snap.chip_temps.shape[-1], snap.fan_rpm.shape[-1])
        if self._model is None or shape != self._shape:
            self._model = HealthModel(shape[0], shape[1], shape[2], self.thresholds)
            self._shape = shape
            self.started_s = now_s
        self._model.update(snap)
        self._last = now_s
        self.modelled = tel.modelled
        self.samples += 1

    def findings(self) -> list[Finding]:
        return self._model.findings()[:MAX_FINDINGS] if self._model is not None else []

    def info(self) -> MaintenanceInfo:
        """The summary the control surface carries (fleet telemetry, MQTT)."""
        doc = self.report()
        flags = tuple(MaintenanceFlag(f.component, f.board, f.index, f.reason[:200], round(f.score, 2),
                                      None if f.lead_time_h is None else round(f.lead_time_h, 1))
                      for f in self.findings()[:MAX_WIRE_FLAGS])
        return MaintenanceInfo(doc["problem"], doc["summary"][:300], flags, doc["min_lead_time_h"], doc["warm"],
                               self.modelled)

    def report(self) -> dict[str, Any]:
        """What REST, MQTT, the web page and fleet telemetry show (JSON-safe, bounded)."""
        findings = self.findings()
        model = self._model
        warm = bool(model is not None and self.started_s is not None
                    and model.time_s - self.started_s >= self.thresholds.warmup_s)
        leads = [f.lead_time_h for f in findings if f.lead_time_h is not None]
        top = findings[0] if findings else None
        return {
            "problem": bool(findings),
            "warm": warm,
            "samples": self.samples,
            "modelled": self.modelled,
            "summary": (f"{len(findings)} component(s) flagged; worst: {top.where()}: {top.reason}" if top else
                        "no component flagged" if warm else "learning baselines (first day): nothing flagged yet"),
            "min_lead_time_h": round(min(leads), 1) if leads else None,
            "findings": [f.to_dict() for f in findings],
        }
