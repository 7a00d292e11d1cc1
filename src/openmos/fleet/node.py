"""A device on the fleet bus: publishes telemetry, answers inventory queries, runs signed commands.

Everything the device sends (telemetry, events, acknowledgements, replies) is signed with its own key
(``DeviceKey``, BIP340 Schnorr) and names its site and device, so the controller believes it only from the
enrolled key.
Commands must be signed (ed25519) by a key the device trusts, name this device (or ``*``) *and this site*,
carry a fresh timestamp and a nonce never seen before: an unsigned, forged, stale, replayed or misaddressed
command is refused and the refusal is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from typing import Any, Protocol

from pydantic import ValidationError

from openmos.fleet import keys
from openmos.fleet.bus import FleetBus
from openmos.fleet.envelope import DeviceKey, parse_command_key, verify_command
from openmos.fleet.messages import DEVICE_ACTIONS, CommandDoc
from openmos.security.signing import SignatureError

log = logging.getLogger(__name__)

MAX_COMMAND_AGE_S = 60.0
ACTIONS = DEVICE_ACTIONS


class DeviceAdapter(Protocol):
    """What the bus needs from a device: its identity, its status, and the actions it can run."""

    device_id: str

    def inventory(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    async def act(self, action: str, args: dict[str, Any]) -> dict[str, Any]: ...


class DeviceNode:
    def __init__(self, bus: FleetBus, site: str, device: DeviceAdapter, trusted_keys: list[bytes],
                 interval_s: float = 5.0, identity: DeviceKey | None = None) -> None:
        self.bus, self.site, self.device = bus, site, device
        self.trusted_keys = [parse_command_key(k) for k in trusted_keys]
        self.identity = identity or DeviceKey()
        self.interval_s = interval_s
        self.refused: list[str] = []
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._seq = time.time_ns() // 1000  # grows across restarts, so the controller can spot replays
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def public_key(self) -> str:
        """The device key (base64): what the controller pins at enrollment."""
        return self.identity.public_b64

    def sign(self, kind: str, body: dict[str, Any], request: str | None = None) -> dict[str, Any]:
        """A device-originated message: site, device, time and sequence inside the signature."""
        self._seq += 1
        doc: dict[str, Any] = {"kind": kind, "site": self.site, "device": self.device.device_id, "ts": time.time(),
                               "seq": self._seq, "body": body}
        if request is not None:
            doc["request"] = request
        return self.identity.sign(doc)

    async def enroll(self, token: str | None = None, csr: bytes | None = None, timeout_s: float = 5.0
                     ) -> dict[str, Any]:
        """Ask the controller to enroll this device's key; {"status": "enrolled" | "pending" | "refused", ...}."""
        body: dict[str, Any] = {"public_key": self.public_key}
        if token is not None:
            body["token"] = token
        if csr is not None:
            body["csr"] = csr.decode()
        replies = await self.bus.query(keys.enroll(self.site, self.device.device_id), self.sign("enroll", body),
                                       timeout_s=timeout_s)
        if not replies or not isinstance(replies[0][1], dict):
            return {"status": "refused", "reason": "no controller answered"}
        return replies[0][1]

    async def start(self) -> None:
        dev = self.device.device_id
        self.bus.serve(keys.inventory(self.site, dev), self._inventory)
        self.bus.serve(keys.status(self.site, dev), self._status)
        for action in ACTIONS:
            self.bus.serve(keys.command(self.site, dev, action), self._command)
        self.bus.subscribe(keys.site_curtail(self.site), self._on_curtail)
        self._task = asyncio.create_task(self._publish_loop())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def publish_telemetry(self) -> None:
        self.bus.publish(keys.telemetry(self.site, self.device.device_id), self.sign("telemetry", self.device.status()))

    async def _publish_loop(self) -> None:
        while True:
            self.publish_telemetry()
            await asyncio.sleep(self.interval_s)

    @staticmethod
    def _request(params: dict[str, Any]) -> str | None:
        nonce = params.get("nonce")
        return nonce if isinstance(nonce, str) and 8 <= len(nonce) <= 64 else None

    async def _inventory(self, key: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.sign("inventory", self.device.inventory(), self._request(params))

    async def _status(self, key: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.sign("status", self.device.status(), self._request(params))

    def _on_curtail(self, key: str, envelope: Any) -> None:
        """Site-wide curtailment: one signed publication reaches every device; each acknowledges on events."""
        try:
            doc = self._verify(envelope, "curtail")
            fraction = float(doc.args["fraction"])
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"fraction {fraction} outside 0..1")
        except (SignatureError, KeyError, TypeError, ValueError) as exc:
            self.refused.append(f"curtail: {exc}")
            return
        task = asyncio.get_running_loop().create_task(self._curtail(fraction, doc.nonce))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _curtail(self, fraction: float, nonce: str) -> None:
        result = await self.device.act("curtail", {"fraction": fraction})
        self.bus.publish(keys.events(self.site, self.device.device_id),
                         self.sign("event", {"ack": nonce, "fraction": fraction, "ok": bool(result.get("ok", True))}))

    def _verify(self, envelope: Any, action: str) -> CommandDoc:
        last_error = "no trusted key"
        raw: dict[str, Any] | None = None
        for public in self.trusted_keys:
            try:
                raw = verify_command(envelope, public)
                break
            except SignatureError as exc:
                last_error = str(exc)
        if raw is None:
            raise SignatureError(last_error)
        try:
            doc = CommandDoc.model_validate(raw)
        except ValidationError as exc:
            raise SignatureError(f"malformed command ({exc.error_count()} error(s))") from None
        if doc.site != self.site:
            raise SignatureError(f"command signed for site {doc.site}, this is {self.site}")
        if doc.device not in (self.device.device_id, "*"):
            raise SignatureError("command addressed to another device")
        if doc.action != action:
            raise SignatureError("signed action does not match the key")
        age = time.time() - doc.issued_at
        if not -5 <= age <= MAX_COMMAND_AGE_S:
            raise SignatureError(f"command is {age:.0f} s old (stale or replayed)")
        if doc.nonce in self._nonces:
            raise SignatureError("command nonce reused (replay)")
        self._nonces[doc.nonce] = time.time()
        while len(self._nonces) > 10_000:
            self._nonces.popitem(last=False)
        return doc

    async def _command(self, key: str, params: dict[str, Any]) -> dict[str, Any]:
        _, _, leaf = keys.parse_device_key(key)
        action = leaf.split("/", 1)[1]
        nonce = None
        with contextlib.suppress(TypeError, AttributeError):
            signed = params.get("signed")
            nonce = self._request(signed) if isinstance(signed, dict) else None
        try:
            doc = self._verify(params, action)
        except SignatureError as exc:
            self.refused.append(f"{action}: {exc}")
            log.warning("fleet: refused %s on %s: %s", action, self.device.device_id, exc)
            return self.sign("reply", {"ok": False, "error": f"refused: {exc}"}, nonce)
        try:
            result = await self.device.act(action, dict(doc.args))
        except (KeyError, TypeError, ValueError) as exc:
            result = {"ok": False, "error": f"bad arguments for {action}: {type(exc).__name__}"}
        return self.sign("reply", {"ok": True, **result}, doc.nonce)


def new_nonce() -> str:
    return secrets.token_hex(12)
