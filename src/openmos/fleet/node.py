"""A device on the fleet bus: publishes telemetry, answers inventory queries, runs signed commands.

Commands must be signed (ed25519) by a key the device trusts, carry a fresh timestamp and a nonce never
seen before: an unsigned, forged, stale or replayed command is refused and the refusal is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from openmos.fleet import keys
from openmos.fleet.bus import FleetBus
from openmos.security.signing import SignatureError, verify_document

log = logging.getLogger(__name__)

MAX_COMMAND_AGE_S = 60.0
ACTIONS = ("pause", "resume", "set_power", "set_pools", "reboot", "locate", "install", "scan")


class DeviceAdapter(Protocol):
    """What the bus needs from a device: its identity, its status, and the actions it can run."""

    device_id: str

    def inventory(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    async def act(self, action: str, args: dict[str, Any]) -> dict[str, Any]: ...


class DeviceNode:
    def __init__(self, bus: FleetBus, site: str, device: DeviceAdapter, trusted_keys: list[bytes],
                 interval_s: float = 5.0) -> None:
        self.bus, self.site, self.device = bus, site, device
        self.trusted_keys = trusted_keys
        self.interval_s = interval_s
        self.refused: list[str] = []
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        dev = self.device.device_id
        self.bus.serve(keys.inventory(self.site, dev), self._inventory)
        self.bus.serve(keys.status(self.site, dev), self._status)
        for action in ACTIONS:
            self.bus.serve(keys.command(self.site, dev, action), self._command)
        self.bus.subscribe(keys.site_curtail(self.site), self._on_curtail)
        self._task = asyncio.create_task(self._publish_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _publish_loop(self) -> None:
        while True:
            self.bus.publish(keys.telemetry(self.site, self.device.device_id), self.device.status())
            await asyncio.sleep(self.interval_s)

    async def _inventory(self, key: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"site": self.site, "device": self.device.device_id, **self.device.inventory()}

    def _on_curtail(self, key: str, envelope: dict[str, Any]) -> None:
        """Site-wide curtailment: one signed publication reaches every device; each acknowledges on events."""
        try:
            doc = self._verify(envelope)
            fraction = float(doc["args"]["fraction"])
        except (SignatureError, KeyError, TypeError, ValueError) as exc:
            self.refused.append(f"curtail: {exc}")
            return
        task = asyncio.get_running_loop().create_task(self._curtail(fraction, str(doc["nonce"])))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _curtail(self, fraction: float, nonce: str) -> None:
        result = await self.device.act("curtail", {"fraction": fraction})
        self.bus.publish(keys.events(self.site, self.device.device_id),
                         {"ack": nonce, "fraction": fraction, "ok": result.get("ok", True)})

    async def _status(self, key: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"site": self.site, "device": self.device.device_id, **self.device.status()}

    def _verify(self, envelope: dict[str, Any]) -> dict[str, Any]:
        last_error = "no trusted key"
        for public in self.trusted_keys:
            try:
                doc = verify_document(envelope, public)
                break
            except SignatureError as exc:
                last_error = str(exc)
        else:
            raise SignatureError(last_error)
        age = time.time() - float(doc.get("issued_at", 0))
        if not -5 <= age <= MAX_COMMAND_AGE_S:
            raise SignatureError(f"command is {age:.0f} s old (stale or replayed)")
        nonce = str(doc.get("nonce", ""))
        if not nonce or nonce in self._nonces:
            raise SignatureError("command nonce reused (replay)")
        self._nonces[nonce] = time.time()
        while len(self._nonces) > 10_000:
            self._nonces.popitem(last=False)
        if doc.get("device") not in (self.device.device_id, "*"):
            raise SignatureError("command addressed to another device")
        return doc

    async def _command(self, key: str, params: dict[str, Any]) -> dict[str, Any]:
        _, _, leaf = keys.parse_device_key(key)
        action = leaf.split("/", 1)[1]
        try:
            doc = self._verify(params)
        except SignatureError as exc:
            self.refused.append(f"{action}: {exc}")
            log.warning("fleet: refused %s on %s: %s", action, self.device.device_id, exc)
            return {"ok": False, "error": f"refused: {exc}"}
        if doc.get("action") != action:
            return {"ok": False, "error": "signed action does not match the key"}
        result = await self.device.act(action, dict(doc.get("args", {})))
        return {"ok": True, **result}
