"""A device on the fleet bus: publishes telemetry, answers inventory queries, runs signed commands.

``DeviceHost`` puts the devices of one process on the bus (one device for an agent, thousands for a gateway
or a simulated site): one queryable and one site subscription per process, whatever the number of devices,
dispatching to each device's own ``DeviceNode`` (its key, its checks, its control surface). The site
curtailment's signature is checked once per process and set of trusted keys; every device still checks
site, address, age and nonce itself. Acknowledgements are control traffic (never dropped under
congestion) and leave in batches of ``MAX_EVENT_BATCH``, each still signed by its own device.

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

import zenoh
from pydantic import ValidationError

from openmos.base.tasks import cancel_all
from openmos.fleet import keys
from openmos.fleet.bus import FleetBus, Reply
from openmos.fleet.envelope import DeviceKey, parse_command_key, verify_command
from openmos.fleet.messages import DEVICE_ACTIONS, MAX_EVENT_BATCH, SNAPSHOT_FRESH_S, CommandDoc
from openmos.security.signing import SignatureError

log = logging.getLogger(__name__)

MAX_COMMAND_AGE_S = 60.0
ACTIONS = DEVICE_ACTIONS
LEAVES = ("inventory", "status", "telemetry", *(f"cmd/{a}" for a in ACTIONS))  # what a device answers queries on


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
        self.trust = tuple(trusted_keys)  # devices trusting the same keys share one signature check
        self.trusted_keys = [parse_command_key(k) for k in trusted_keys]
        self.identity = identity or DeviceKey()
        self.interval_s = interval_s
        self.refused: list[str] = []
        self.host: DeviceHost | None = None
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._seq = time.time_ns() // 1000  # grows across restarts, so the controller can spot replays
        self._task: asyncio.Task[None] | None = None
        self._own_host: DeviceHost | None = None
        self._snapshot: bytes | None = None  # the last signed telemetry (what a telemetry poll is answered with)
        self._snapshot_at = 0.0  # time.monotonic() when it was signed
        self._wanted: tuple[float, str] | None = None  # the accepted site curtailment not yet applied (its nonce)
        self._applier: asyncio.Task[None] | None = None  # applies the accepted site curtailments, newest first

    @property
    def public_key(self) -> str:
        """The device key (base64): what the controller pins at enrollment."""
        return self.identity.public_b64

    def _doc(self, kind: str, body: dict[str, Any], request: str | None) -> dict[str, Any]:
        self._seq += 1
        doc: dict[str, Any] = {"kind": kind, "site": self.site, "device": self.device.device_id, "ts": time.time(),
                               "seq": self._seq, "body": body}
        if request is not None:
            doc["request"] = request
        return doc

    def sign(self, kind: str, body: dict[str, Any], request: str | None = None) -> dict[str, Any]:
        """A device-originated message: site, device, time and sequence inside the signature (as a dict, to
        travel inside another document, e.g. a host's batch of acknowledgements)."""
        return self.identity.sign(self._doc(kind, body, request))

    def signed(self, kind: str, body: dict[str, Any], request: str | None = None) -> bytes:
        """The same message as the payload this node sends on its own key (serialised once, signed over
        those very bytes: the controller verifies them as they arrive and parses them once)."""
        return self.identity.sign_payload(self._doc(kind, body, request))

    async def enroll(self, token: str | None = None, csr: bytes | None = None, timeout_s: float = 5.0
                     ) -> dict[str, Any]:
        """Ask the controller to enroll this device's key; {"status": "enrolled" | "pending" | "refused", ...}."""
        body: dict[str, Any] = {"public_key": self.public_key}
        if token is not None:
            body["token"] = token
        if csr is not None:
            body["csr"] = csr.decode()
        replies = await self.bus.query(keys.enroll(self.site, self.device.device_id), self.signed("enroll", body),
                                       timeout_s=timeout_s)
        if not replies or not isinstance(replies[0][1], dict):
            return {"status": "refused", "reason": "no controller answered"}
        return replies[0][1]

    async def start(self) -> None:
        """On the bus on its own (a process with one device): its own host of one."""
        if self.host is not None:
            raise RuntimeError(f"{self.device.device_id} is already on the bus through a host")
        self._own_host = DeviceHost(self.bus, self.site, shared=False)
        self._own_host.add(self)
        await self._own_host.start()

    async def stop(self) -> None:
        if self._own_host is not None:
            host, self._own_host = self._own_host, None
            await host.stop()
        await self.halt()

    async def halt(self) -> None:
        """Stop publishing telemetry and applying site curtailments (the host stops each of its devices so)."""
        tasks = [t for t in (self._task, self._applier) if t is not None]
        self._task = self._applier = None
        await cancel_all(tasks)

    def start_telemetry(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._publish_loop())

    def refresh_snapshot(self) -> bytes:
        """Sign the device's telemetry now (its own sequence number and time inside): the snapshot that is
        published and that telemetry polls are answered with until the next one."""
        self._snapshot = self.signed("telemetry", self.device.status())
        self._snapshot_at = time.monotonic()
        return self._snapshot

    def snapshot(self) -> bytes:
        """The last signed telemetry if younger than ``SNAPSHOT_FRESH_S``, else a new one: a poll costs the
        device no signature while its telemetry loop keeps the snapshot fresh (signing stays off the poll)."""
        if self._snapshot is None or time.monotonic() - self._snapshot_at >= SNAPSHOT_FRESH_S:
            return self.refresh_snapshot()
        return self._snapshot

    def publish_telemetry(self) -> None:
        self.bus.publish(keys.telemetry(self.site, self.device.device_id), self.refresh_snapshot())

    async def _publish_loop(self) -> None:
        while True:
            self.publish_telemetry()
            await asyncio.sleep(self.interval_s)

    @staticmethod
    def _request(params: dict[str, Any]) -> str | None:
        nonce = params.get("nonce")
        return nonce if isinstance(nonce, str) and 8 <= len(nonce) <= 64 else None

    async def answer(self, leaf: str, params: dict[str, Any]) -> bytes:
        """The signed reply to a query on this device's ``leaf`` (inventory, status, telemetry, cmd/<action>):
        ``status`` is signed for this very query (its nonce inside), ``telemetry`` is the last signed snapshot."""
        if leaf == "inventory":
            return self.signed("inventory", self.device.inventory(), self._request(params))
        if leaf == "status":
            return self.signed("status", self.device.status(), self._request(params))
        if leaf == "telemetry":
            return self.snapshot()
        return await self._command(leaf.split("/", 1)[1], params)

    def refuse(self, action: str, why: Exception) -> None:
        self.refused.append(f"{action}: {why}")
        del self.refused[:-100]  # bounded: a flood of forgeries must not grow memory

    def signed_by_trusted(self, envelope: Any) -> dict[str, Any]:
        """The command document if one of this device's trusted keys signed it; SignatureError else."""
        last_error = "no trusted key"
        for public in self.trusted_keys:
            try:
                return verify_command(envelope, public)
            except SignatureError as exc:
                last_error = str(exc)
        raise SignatureError(last_error)

    @staticmethod
    def parse_command(raw: dict[str, Any]) -> CommandDoc:
        try:
            return CommandDoc.model_validate(raw)
        except ValidationError as exc:
            raise SignatureError(f"malformed command ({exc.error_count()} error(s))") from None

    def admit(self, doc: CommandDoc, action: str) -> CommandDoc:
        """This device's own checks of a validly signed command: its site, its address, fresh, never seen."""
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

    def _verify(self, envelope: Any, action: str) -> CommandDoc:
        return self.admit(self.parse_command(self.signed_by_trusted(envelope)), action)

    def curtail_from(self, doc: CommandDoc) -> float | None:
        """The fraction of a site curtailment this device accepts (None: refused, and the refusal kept)."""
        try:
            self.admit(doc, "curtail")
            fraction = doc.args["fraction"]
            if isinstance(fraction, bool) or not isinstance(fraction, int | float) \
                    or not 0.0 <= fraction <= 1.0:  # NaN fails the range too
                raise ValueError(f"fraction {fraction!r} is not a number within 0..1")
        except (SignatureError, KeyError, TypeError, ValueError) as exc:
            self.refuse("curtail", exc)
            return None
        return float(fraction)

    def accept_curtail(self, fraction: float, nonce: str) -> dict[str, Any]:
        """Queue an admitted site curtailment for the device's control surface; the signed acknowledgement
        ("accepted": verified, valid and queued, it will be applied). The device reports it "applied" (or
        not ``ok``) in a second signed event once its control surface has run it. Only the newest queued
        level runs: one that arrives while the device is still applying an older one replaces the wait."""
        superseded = self._wanted
        self._wanted = (fraction, nonce)
        if superseded is not None and self.host is not None:  # never ran: say so, it will not be "applied"
            self.host.emit(self, self.sign("event", {"ack": superseded[1], "fraction": superseded[0],
                                                     "stage": "superseded", "ok": False}))
        if self._applier is None or self._applier.done():
            self._applier = asyncio.get_running_loop().create_task(self._apply_curtails())
        return self.sign("event", {"ack": nonce, "fraction": fraction, "stage": "accepted", "ok": True})

    async def _apply_curtails(self) -> None:
        while self._wanted is not None:
            (fraction, nonce), self._wanted = self._wanted, None
            try:
                result = await self.device.act("curtail", {"fraction": fraction})
            except Exception as exc:  # the device failed: say so in the event rather than stay silent
                log.warning("fleet: curtail on %s failed: %s", self.device.device_id, exc)
                result = {"ok": False}
            event = self.sign("event", {"ack": nonce, "fraction": fraction, "stage": "applied",
                                        "ok": bool(result.get("ok", True))})
            if self.host is not None:
                self.host.emit(self, event)

    async def _command(self, action: str, params: dict[str, Any]) -> bytes:
        nonce = None
        with contextlib.suppress(TypeError, AttributeError):
            signed = params.get("signed")
            nonce = self._request(signed) if isinstance(signed, dict) else None
        try:
            doc = self._verify(params, action)
        except SignatureError as exc:
            self.refuse(action, exc)
            log.warning("fleet: refused %s on %s: %s", action, self.device.device_id, exc)
            return self.signed("reply", {"ok": False, "error": f"refused: {exc}"}, nonce)
        try:
            result = await self.device.act(action, dict(doc.args))
        except (KeyError, TypeError, ValueError) as exc:
            result = {"ok": False, "error": f"bad arguments for {action}: {type(exc).__name__}"}
        return self.signed("reply", {"ok": True, **result}, doc.nonce)


class DeviceHost:
    """The devices of one process on the bus: one queryable, one site subscription, batched acknowledgements.

    ``shared`` (the default) serves every device key of the site, so devices can join at any time and a
    query to a device elsewhere is answered with nothing (a site has a few such processes, not thousands);
    a host of one device (``DeviceNode.start``) serves that device's keys only.
    """

    def __init__(self, bus: FleetBus, site: str, *, shared: bool = True, name: str | None = None) -> None:
        keys.host_events(site, name or "h")  # validates the chunks
        self.bus, self.site, self.shared = bus, site, shared
        self.name = name or f"h-{secrets.token_hex(6)}"
        self.nodes: dict[str, DeviceNode] = {}
        self._acks: list[tuple[DeviceNode, dict[str, Any]]] = []
        self._flush: asyncio.Handle | None = None
        self._started = False

    def add(self, node: DeviceNode) -> None:
        if node.bus is not self.bus or node.site != self.site:
            raise ValueError("a host serves devices of its own site on its own bus")
        if node.device.device_id in self.nodes or node.host is not None:
            raise ValueError(f"{node.device.device_id} is already hosted")
        if not self.shared and self.nodes:
            raise ValueError("this host serves one device")
        node.host = self
        self.nodes[node.device.device_id] = node
        if self._started:
            node.start_telemetry()

    async def start(self) -> None:
        if self.shared:
            pattern = f"{keys.ROOT}/{self.site}/dev/*/**"
        else:
            (only,) = self.nodes
            pattern = f"{keys.ROOT}/{self.site}/dev/{only}/**"
        self.bus.serve_many(pattern, self._on_query)
        self.bus.subscribe(keys.site_curtail(self.site), self._on_curtail)
        self._started = True
        for node in self.nodes.values():
            node.start_telemetry()

    async def stop(self) -> None:
        await asyncio.gather(*(node.halt() for node in self.nodes.values()))
        self._send()

    # -- queries ------------------------------------------------------------------------------------------

    def match(self, selector: str) -> list[tuple[DeviceNode, str]]:
        """(device, leaf) pairs a query key expression names among the hosted devices."""
        parts = selector.split("/")
        leaf = "/".join(parts[4:])
        if len(parts) >= 5 and parts[:3] in ([keys.ROOT, self.site, "dev"], [keys.ROOT, "*", "dev"]) \
                and "*" not in leaf and (parts[3] == "*" or "*" not in parts[3]):
            if leaf not in LEAVES:
                return []
            if parts[3] == "*":
                return [(node, leaf) for node in self.nodes.values()]
            node = self.nodes.get(parts[3])
            return [(node, leaf)] if node is not None else []
        try:  # any other wildcard form: zenoh's own matching, leaf by leaf, then device by device
            expr = zenoh.KeyExpr(selector)
        except Exception:  # zenoh raises its own error type for a malformed key expression
            return []
        out: list[tuple[DeviceNode, str]] = []
        for leaf in LEAVES:
            if expr.intersects(zenoh.KeyExpr(f"{keys.ROOT}/{self.site}/dev/*/{leaf}")):
                out += [(node, leaf) for dev, node in self.nodes.items()
                        if expr.intersects(zenoh.KeyExpr(f"{keys.ROOT}/{self.site}/dev/{dev}/{leaf}"))]
        return out

    async def _on_query(self, selector: str, params: dict[str, Any]) -> list[tuple[str, Reply]]:
        targets = self.match(selector)
        replies = await asyncio.gather(*(node.answer(leaf, params) for node, leaf in targets))
        return [(f"{keys.ROOT}/{self.site}/dev/{node.device.device_id}/{leaf}", reply)
                for (node, leaf), reply in zip(targets, replies, strict=True)]

    # -- the site curtailment -----------------------------------------------------------------------------

    def _on_curtail(self, key: str, envelope: Any) -> None:
        """One signed publication for every device of the site: the signature is checked once per set of
        trusted keys, then each device admits it (site, address, age, nonce), acknowledges it on its own as
        accepted, and applies it after: every acknowledgement leaves before the first device's control work."""
        checked: dict[tuple[bytes, ...], CommandDoc | SignatureError] = {}
        for node in self.nodes.values():
            doc = checked.get(node.trust)
            if doc is None:
                try:
                    doc = checked[node.trust] = node.parse_command(node.signed_by_trusted(envelope))
                except SignatureError as exc:
                    doc = checked[node.trust] = exc
            if isinstance(doc, SignatureError):
                node.refuse("curtail", doc)
                continue
            fraction = node.curtail_from(doc)
            if fraction is not None:
                self.emit(node, node.accept_curtail(fraction, doc.nonce))
        if any(isinstance(d, SignatureError) for d in checked.values()):
            log.warning("fleet: refused a site curtailment on %s: %s", self.site,
                        next(d for d in checked.values() if isinstance(d, SignatureError)))

    def emit(self, node: DeviceNode, event: dict[str, Any]) -> None:
        """Queue a device's signed event; what is queued in one pass of the loop leaves together."""
        self._acks.append((node, event))
        if len(self._acks) >= MAX_EVENT_BATCH:
            self._send()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        batch, self._acks = self._acks, []
        for i in range(0, len(batch), MAX_EVENT_BATCH):
            chunk = batch[i:i + MAX_EVENT_BATCH]
            if len(chunk) == 1:  # one device: on its own events key
                node, event = chunk[0]
                self.bus.publish(keys.events(self.site, node.device.device_id), event, control=True)
            else:
                self.bus.publish(keys.host_events(self.site, self.name), {"events": [e for _, e in chunk]},
                                 control=True)


def new_nonce() -> str:
    return secrets.token_hex(12)
