"""The fleet service: one process that joins the bus, keeps inventory and telemetry in the store, raises
alerts, answers enrollment, and serves the dashboard. Everything else (devices, other control-plane peers)
is reached over the bus.

Only messages signed by an enrolled device key reach ``latest``, the store, the alerts and the dashboard
(see ``trust``); the rest is counted in ``bus.metrics``. Shutdown is clean under any load: deliveries stop
first, then the loops, then the one database thread finishes its last job before the store closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from openmos.base.files import RotatingLog
from openmos.base.tasks import cancel_all
from openmos.fleet import keys
from openmos.fleet.alerts import AlertEngine, AlertRules
from openmos.fleet.bus import BusConfig, FleetBus
from openmos.fleet.control import FleetController
from openmos.fleet.enroll import EnrollmentRefused, EnrollmentRegistry
from openmos.fleet.envelope import parse_public, verify
from openmos.fleet.messages import DeviceDoc, DeviceStatus, EnrollBody, MessageRejected, body_of, parse_device_doc
from openmos.fleet.pki import FleetCA
from openmos.fleet.store import FleetStore, Sample
from openmos.fleet.trust import MAX_SKEW_S, DeviceVerifier
from openmos.security.signing import SignatureError

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_PENDING_SAMPLES = 200_000


class FleetService:
    def __init__(self, bus_config: BusConfig, store_url: str, signing_key_pem: bytes, audit_path: Path,
                 *, rules: AlertRules | None = None, webhooks: list[str] | None = None, approvals_needed: int = 2,
                 inventory_interval_s: float = 30.0, flush_interval_s: float = 2.0,
                 registry: EnrollmentRegistry | None = None, ca: FleetCA | None = None,
                 command_key_pem: bytes | None = None, audit_max_bytes: int = RotatingLog.max_bytes,
                 audit_keep: int = RotatingLog.keep) -> None:
        self.registry = registry or EnrollmentRegistry(None)
        if bus_config.tls is not None and bus_config.role == "controller":  # the registry's sites are let in
            bus_config = replace(bus_config, sites=tuple(sorted(set(bus_config.sites) | self.registry.sites())))
        self.bus = FleetBus(bus_config)
        self.store = FleetStore(store_url)
        self.verifier = DeviceVerifier(self.registry, self.bus.metrics)
        self.controller = FleetController(self.bus, signing_key_pem, audit_path, approvals_needed,
                                          registry=self.registry, verifier=self.verifier,
                                          audit_max_bytes=audit_max_bytes, audit_keep=audit_keep)
        self.ca = ca
        self.command_key_pem = command_key_pem
        self.alerts = AlertEngine(rules or AlertRules(), webhooks or [])
        # Keyed by (site, device): a device id is unique only within its site.
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}
        self.inventory: dict[tuple[str, str], dict[str, Any]] = {}
        self.inventory_interval_s = inventory_interval_s
        self.flush_interval_s = flush_interval_s
        self._pending: list[Sample] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._db = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-store")
        self._stopped = False

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the one database thread (never two transactions at once)."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def start(self) -> None:
        await self.bus.open()
        self.controller.follow_telemetry("*", self._on_telemetry)
        self.bus.serve(f"{keys.ROOT}/*/enroll/*", self._on_enroll)
        self._tasks = [asyncio.create_task(self._inventory_loop()), asyncio.create_task(self._flush_loop())]

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.bus.close()  # no more deliveries from zenoh threads
        await cancel_all(self._tasks)
        batch, self._pending = self._pending, []
        if batch:
            with contextlib.suppress(Exception):
                await self.db(self.store.add_samples, batch)
        await asyncio.to_thread(self._db.shutdown, True)  # the last store job finishes before close
        self.store.close()

    def _on_telemetry(self, doc: DeviceDoc, body: DeviceStatus) -> None:
        now = time.time()
        status = body.model_dump()
        self.latest[doc.site, doc.device] = {**status, "site": doc.site, "device": doc.device, "received": now}
        self.alerts.observe((doc.site, doc.device), status, now)
        if len(self._pending) < MAX_PENDING_SAMPLES:
            self._pending.append(Sample(doc.site, doc.device, now, status["hashrate_ths"], status["power_w"],
                                        status["hottest_c"], not status["paused"]))
        else:
            self.bus.metrics.drop("store_backlog")

    async def _on_enroll(self, key: str, envelope: dict[str, Any]) -> dict[str, Any]:
        """A device's enrollment request, signed by the key it asks to enroll (proof of possession)."""
        try:
            parts = key.split("/")
            site, device = parts[1], parts[3]
            claimed = envelope.get("signed", {}).get("body", {}).get("public_key")
            if not isinstance(claimed, str):
                raise MessageRejected("schema", "no public key")
            raw = verify(envelope, parse_public(claimed))
            doc = parse_device_doc(raw)
            body = body_of(doc)
            assert isinstance(body, EnrollBody)
            if doc.kind != "enroll" or (doc.site, doc.device) != (site, device):
                raise MessageRejected("identity_mismatch")
            if abs(time.time() - doc.ts) > MAX_SKEW_S:
                raise MessageRejected("stale")
            source = "fleet bus" + (", asks for a device certificate" if body.csr else "")
            status = self.registry.request(site, device, body.public_key, body.token, body.csr, source)
        except (MessageRejected, SignatureError, AttributeError, IndexError) as exc:
            reason = exc.reason if isinstance(exc, MessageRejected) else "bad_request"
            self.bus.metrics.drop(f"enroll_{reason}")
            return {"status": "refused", "reason": reason}
        except EnrollmentRefused as exc:
            self.bus.metrics.drop(f"enroll_{exc.reason}")
            return {"status": "refused", "reason": exc.reason, "error": str(exc)}
        self.bus.metrics.accept(f"enroll_{status}")
        reply: dict[str, Any] = {"status": status}
        if status == "enrolled":
            log.debug("fleet: %s/%s enrolled", site, device)
            if self.command_key_pem is not None:
                reply["command_key"] = self.command_key_pem.decode()
            if self.ca is not None:
                reply["ca"] = self.ca.cert_pem.decode()
                if body.csr:
                    try:
                        reply["certificate"] = self.ca.sign_csr(body.csr.encode(), "device", site, device).decode()
                    except ValueError as exc:
                        reply["certificate_error"] = str(exc)
        return reply

    async def refresh_inventory(self) -> int:
        found = await self.controller.inventory()
        for inv in found:
            self.inventory[inv["site"], inv["device"]] = inv
            await self.db(self.store.upsert_device, inv)
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
                await self.db(self.store.add_samples, batch)
            raised, cleared = self.alerts.evaluate()
            for alert in raised:
                log.warning("ALERT %s %s: %s", alert.device, alert.kind, alert.message)
            await self.alerts.notify(raised, cleared)
            if time.time() - last_rollup > 60:
                await self.db(self.store.rollup, time.time())
                await self.db(self.store.apply_retention, time.time())
                last_rollup = time.time()

    def overview(self) -> dict[str, Any]:
        now = time.time()
        online = [d for d in self.latest.values() if now - d["received"] < self.alerts.rules.offline_after_s]
        ths = sum(d["hashrate_ths"] or 0.0 for d in online)
        watts = sum(d["power_w"] or 0.0 for d in online)
        by_site: dict[str, dict[str, float]] = {}
        for d in online:
            s = by_site.setdefault(d["site"], {"devices": 0, "hashrate_ths": 0.0, "power_w": 0.0})
            s["devices"] += 1
            s["hashrate_ths"] += d["hashrate_ths"] or 0.0
            s["power_w"] += d["power_w"] or 0.0
        pools: dict[str, int] = {}
        for d in online:
            for p in d["pools"][:1]:
                pools[p["url"]] = pools.get(p["url"], 0) + 1
        dropped = self.bus.metrics.snapshot()["dropped"]
        return {"devices": len(self.inventory) or len(self.latest), "online": len(online),
                "hashrate_ths": ths, "power_w": watts, "j_per_th": watts / ths if ths else None,
                "sites": by_site, "pools": pools, "alerts": len(self.alerts.active),
                "modelled": any(d["modelled"] for d in online), "bus_dropped": sum(dropped.values()),
                "enrolled": len(self.registry.enrolled), "pending_enrollments": len(self.registry.pending)}
