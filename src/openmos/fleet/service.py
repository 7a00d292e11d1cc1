"""The fleet service: one process that joins the bus, keeps inventory and telemetry in the store, raises
alerts, and serves the dashboard. Everything else (devices, other control-plane peers) is reached over
the bus."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from openmos.fleet import keys
from openmos.fleet.alerts import AlertEngine, AlertRules
from openmos.fleet.bus import BusConfig, FleetBus
from openmos.fleet.control import FleetController
from openmos.fleet.store import FleetStore, Sample

log = logging.getLogger(__name__)


class FleetService:
    def __init__(self, bus_config: BusConfig, store_url: str, signing_key_pem: bytes, audit_path: Path,
                 *, rules: AlertRules | None = None, webhooks: list[str] | None = None, approvals_needed: int = 2,
                 inventory_interval_s: float = 30.0, flush_interval_s: float = 2.0) -> None:
        self.bus = FleetBus(bus_config)
        self.store = FleetStore(store_url)
        self.controller = FleetController(self.bus, signing_key_pem, audit_path, approvals_needed)
        self.alerts = AlertEngine(rules or AlertRules(), webhooks or [])
        self.latest: dict[str, dict[str, Any]] = {}
        self.inventory: dict[str, dict[str, Any]] = {}
        self.inventory_interval_s = inventory_interval_s
        self.flush_interval_s = flush_interval_s
        self._pending: list[Sample] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.bus.open()
        self.bus.subscribe(f"{keys.ROOT}/*/dev/*/telemetry", self._on_telemetry)
        self._tasks = [asyncio.create_task(self._inventory_loop()), asyncio.create_task(self._flush_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.bus.close()
        self.store.close()

    def _on_telemetry(self, key: str, doc: dict[str, Any]) -> None:
        site, device, _ = keys.parse_device_key(key)
        now = time.time()
        self.latest[device] = {**doc, "site": site, "device": device, "received": now}
        self.alerts.observe(device, doc, now)
        self._pending.append(Sample(device, now, doc.get("hashrate_ths"), doc.get("power_w"), doc.get("hottest_c"),
                                    not doc.get("paused", False)))

    async def refresh_inventory(self) -> int:
        found = await self.controller.inventory()
        for inv in found:
            self.inventory[inv["device"]] = inv
            await asyncio.to_thread(self.store.upsert_device, inv)
        return len(found)

    async def _inventory_loop(self) -> None:
        while True:
            try:
                await self.refresh_inventory()
            except Exception as exc:  # a bad reply must not stop the loop
                log.warning("fleet inventory refresh failed: %s", exc)
            await asyncio.sleep(self.inventory_interval_s)

    async def _flush_loop(self) -> None:
        last_rollup = 0.0
        while True:
            await asyncio.sleep(self.flush_interval_s)
            batch, self._pending = self._pending, []
            if batch:
                await asyncio.to_thread(self.store.add_samples, batch)
            raised, cleared = self.alerts.evaluate()
            for alert in raised:
                log.warning("ALERT %s %s: %s", alert.device, alert.kind, alert.message)
            await self.alerts.notify(raised, cleared)
            if time.time() - last_rollup > 60:
                await asyncio.to_thread(self.store.rollup, time.time())
                await asyncio.to_thread(self.store.apply_retention, time.time())
                last_rollup = time.time()

    def overview(self) -> dict[str, Any]:
        now = time.time()
        online = [d for d in self.latest.values() if now - d["received"] < self.alerts.rules.offline_after_s]
        ths = sum(float(d.get("hashrate_ths") or 0) for d in online)
        watts = sum(float(d.get("power_w") or 0) for d in online)
        by_site: dict[str, dict[str, float]] = {}
        for d in online:
            s = by_site.setdefault(d["site"], {"devices": 0, "hashrate_ths": 0.0, "power_w": 0.0})
            s["devices"] += 1
            s["hashrate_ths"] += float(d.get("hashrate_ths") or 0)
            s["power_w"] += float(d.get("power_w") or 0)
        pools: dict[str, int] = {}
        for d in online:
            for p in d.get("pools", [])[:1]:
                pools[str(p.get("url"))] = pools.get(str(p.get("url")), 0) + 1
        return {"devices": len(self.inventory) or len(self.latest), "online": len(online),
                "hashrate_ths": ths, "power_w": watts, "j_per_th": watts / ths if ths else None,
                "sites": by_site, "pools": pools, "alerts": len(self.alerts.active),
                "modelled": any(d.get("modelled") for d in online)}
