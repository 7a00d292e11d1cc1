"""Fleet alerts: thresholds over the latest status of every device, a live list, and webhook hooks.

Rules: chip temperature, hashrate drop against the device's own recent level, offline (no telemetry),
wrong pool (not in the site's allowed pool list), efficiency regression (J/TH above the device's best),
maintenance (the device's predictive-maintenance model flags components; critical within a day).
An alert is raised once, stays in the live list while the condition holds, and clears by itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertRules:
    max_temp_c: float = 80.0
    hashrate_drop: float = 0.25  # fraction below the device's recent best
    offline_after_s: float = 120.0
    allowed_pools: frozenset[str] = frozenset()  # empty: not checked
    efficiency_regression: float = 0.10  # J/TH this much above the device's best
    maintenance_critical_h: float = 24.0  # a maintenance flag expected to fail sooner is critical


DeviceId = tuple[str, str]  # (site, device): a device id is unique only within its site


@dataclass
class Alert:
    site: str
    device: str
    kind: str
    message: str
    since: float
    severity: str = "warning"


@dataclass
class AlertEngine:
    rules: AlertRules = field(default_factory=AlertRules)
    webhooks: list[str] = field(default_factory=list)
    active: dict[tuple[str, str, str], Alert] = field(default_factory=dict)  # (site, device, kind)
    history: list[Alert] = field(default_factory=list)
    _best_rate: dict[DeviceId, float] = field(default_factory=dict)
    _best_jth: dict[DeviceId, float] = field(default_factory=dict)
    _last_seen: dict[DeviceId, float] = field(default_factory=dict)
    _status: dict[DeviceId, dict[str, Any]] = field(default_factory=dict)

    def observe(self, device: DeviceId, status: dict[str, Any], now: float | None = None) -> None:
        """Record a status document (telemetry) of ``device`` = (site, device id)."""
        now = time.time() if now is None else now
        self._last_seen[device] = now
        rate = float(status.get("hashrate_ths") or 0.0)
        power = status.get("power_w")
        self._best_rate[device] = max(self._best_rate.get(device, 0.0), rate)
        if rate > 0 and power:
            jth = float(power) / rate
            self._best_jth[device] = min(self._best_jth.get(device, jth), jth)
        self._status[device] = status

    def evaluate(self, now: float | None = None) -> tuple[list[Alert], list[Alert]]:
        """(raised, cleared) since the last evaluation."""
        now = time.time() if now is None else now
        r = self.rules
        current: dict[tuple[str, str, str], Alert] = {}
        for device, seen in self._last_seen.items():
            site, name = device
            status = self._status.get(device, {})
            if now - seen > r.offline_after_s:
                current[(site, name, "offline")] = Alert(site, name, "offline", f"no telemetry for {now - seen:.0f} s",
                                                         now, "critical")
                continue
            hottest = status.get("hottest_c")
            if hottest is not None and hottest >= r.max_temp_c:
                current[(site, name, "temperature")] = Alert(site, name, "temperature", f"chip at {hottest:.1f} C",
                                                             now, "critical")
            rate = float(status.get("hashrate_ths") or 0.0)
            best = self._best_rate.get(device, 0.0)
            if best > 0 and rate < best * (1 - r.hashrate_drop) and not status.get("paused"):
                current[(site, name, "hashrate")] = Alert(
                    site, name, "hashrate", f"{rate:.1f} TH/s, {1 - rate / best:.0%} below {best:.1f}", now)
            pools = {p.get("url") for p in status.get("pools", []) if isinstance(p, dict)}
            if r.allowed_pools and pools - r.allowed_pools:
                unexpected = sorted(str(p) for p in pools - r.allowed_pools)
                current[(site, name, "pool")] = Alert(site, name, "pool", f"unexpected pool(s): {unexpected}", now,
                                                      "critical")
            maint = status.get("maintenance") or {}
            if maint.get("problem"):
                lead = maint.get("min_lead_time_h")
                severity = "critical" if lead is not None and lead < r.maintenance_critical_h else "warning"
                current[(site, name, "maintenance")] = Alert(site, name, "maintenance",
                                                             str(maint.get("summary", ""))[:300], now, severity)
            power = status.get("power_w")
            if rate > 0 and power and device in self._best_jth:
                jth = float(power) / rate
                if jth > self._best_jth[device] * (1 + r.efficiency_regression):
                    text = f"{jth:.2f} J/TH vs best {self._best_jth[device]:.2f}"
                    current[(site, name, "efficiency")] = Alert(site, name, "efficiency", text, now)
        raised = [a for k, a in current.items() if k not in self.active]
        cleared = [a for k, a in self.active.items() if k not in current]
        for key, alert in current.items():
            self.active.setdefault(key, alert)
        for alert in cleared:
            del self.active[(alert.site, alert.device, alert.kind)]
        self.history += raised
        return raised, cleared

    async def notify(self, raised: list[Alert], cleared: list[Alert]) -> int:
        """POST raised and cleared alerts to every webhook; returns deliveries that succeeded."""
        if not (raised or cleared) or not self.webhooks:
            return 0
        body = {"raised": [a.__dict__ for a in raised], "cleared": [a.__dict__ for a in cleared]}
        ok = 0
        async with httpx.AsyncClient(timeout=5.0) as client:
            for url in self.webhooks:
                try:
                    resp = await client.post(url, json=body)
                    ok += resp.status_code < 300
                except httpx.HTTPError as exc:
                    log.warning("alert webhook %s failed: %s", url, exc)
        return ok
