"""The fleet controller: inventory over the bus, bulk actions on target queries, multi-party approval for
dangerous actions, per-target results and an audit log of who did what."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from openmos.base.files import RotatingLog
from openmos.fleet import keys
from openmos.fleet.bus import FleetBus
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.messages import MAX_EVENT_BATCH, DeviceDoc, DeviceEvent, DeviceStatus, MessageRejected
from openmos.fleet.trust import DeviceVerifier
from openmos.security.signing import sign_document

DANGEROUS = {"set_pools", "reboot", "install"}  # pool changes and firmware need N approvals


@dataclass(frozen=True)
class TargetQuery:
    """Which devices an action is for: every given filter must match (site, model, tags, devices).

    ``devices`` names devices as ``site/device`` (a device id is unique only within its site); a bare id
    matches that id at every site the other filters allow.
    """

    site: str | None = None
    model: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    devices: tuple[str, ...] = ()

    def matches(self, inv: dict[str, Any]) -> bool:
        if self.site and inv.get("site") != self.site:
            return False
        if self.model and inv.get("model") != self.model:
            return False
        if self.devices and inv.get("device") not in self.devices \
                and keys.device_ref(str(inv.get("site")), str(inv.get("device"))) not in self.devices:
            return False
        tags = inv.get("tags", {})
        return all(tags.get(k) == v for k, v in self.tags.items())


@dataclass
class ActionRequest:
    request_id: str
    action: str
    args: dict[str, Any]
    target: TargetQuery
    requested_by: str
    approvals_needed: int
    approvals: list[str] = field(default_factory=list)
    state: str = "voting"  # voting -> ready -> running (execute or a rollout) -> done; never back
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # by "site/device"


class ApprovalError(PermissionError):
    pass


MAX_REQUESTS = 512  # action requests held (open ones, then the newest finished): 3000 operator POSTs of 60 KB
# args held 3000 requests and +1.1 GB of RSS for ever
MAX_BROADCASTS = 64  # site commands whose acknowledgements the controller still follows


@dataclass
class Broadcast:
    """One signed site-wide command as the controller follows it, from its devices' signed events: which
    devices *accepted* it (verified, valid, queued on their control surface: the acknowledgement), which
    report it *applied*, and which did not apply it (their control surface failed, or a newer command
    replaced it before it ran). Only the devices it was meant for count."""

    site: str
    nonce: str
    fraction: float
    devices: frozenset[str]
    published: float = field(default_factory=time.perf_counter)
    accepted: set[str] = field(default_factory=set)
    applied: set[str] = field(default_factory=set)
    not_applied: set[str] = field(default_factory=set)
    accepted_s: float | None = None  # from publication to the last expected acknowledgement
    applied_s: float | None = None  # ... to the last expected "applied" (or "not applied")
    all_accepted: asyncio.Event = field(default_factory=asyncio.Event)
    all_applied: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._update()

    def record(self, device: str, stage: str | None, ok: bool | None) -> None:
        """A believed event of ``device`` about this command (``stage`` None: an acknowledgement sent once
        applied, by a device that does not report the stages)."""
        if device not in self.devices:
            return
        self.accepted.add(device)  # "applied" implies accepted (its acknowledgement may have been lost)
        if stage in (None, "applied"):
            (self.applied if ok is not False else self.not_applied).add(device)
        elif stage == "superseded":
            self.not_applied.add(device)
        self._update()

    def applying(self) -> int:
        """Devices that accepted the command and have not reported yet whether they applied it."""
        return len(self.accepted - self.applied - self.not_applied)

    def _update(self) -> None:
        now = time.perf_counter() - self.published
        if not self.all_accepted.is_set() and self.devices <= self.accepted:
            self.accepted_s = now
            self.all_accepted.set()
        if not self.all_applied.is_set() and self.devices <= self.applied | self.not_applied:
            self.applied_s = now
            self.all_applied.set()

    async def wait_applied(self, timeout_s: float) -> bool:
        """True once every device reported (applied or not), False after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_applied.wait(), timeout_s)
        return self.all_applied.is_set()


TelemetryListener = Callable[[DeviceDoc, DeviceStatus], None]


class FleetController:
    def __init__(self, bus: FleetBus, signing_key_pem: bytes, audit_path: Path, approvals_needed: int = 2, *,
                 registry: EnrollmentRegistry | None = None, verifier: DeviceVerifier | None = None,
                 audit_max_bytes: int = RotatingLog.max_bytes, audit_keep: int = RotatingLog.keep) -> None:
        self.bus = bus
        self.registry = registry or EnrollmentRegistry(None)
        self.verifier = verifier or DeviceVerifier(self.registry, bus.metrics)
        self.signing_key = signing_key_pem
        self.audit_path = audit_path
        self.audit = RotatingLog(audit_path, audit_max_bytes, audit_keep)  # a request flood cannot fill the disk
        self.approvals_needed = approvals_needed
        self.requests: dict[str, ActionRequest] = {}
        self._ids = itertools.count(1)
        self._ack_sites: set[str] = set()
        self._broadcasts: dict[str, Broadcast] = {}  # by nonce, the newest MAX_BROADCASTS
        self.last_broadcast: dict[str, Broadcast] = {}  # by site
        self._telemetry_sites: set[str] = set()  # subscribed: site names, or "*"
        self._telemetry_listeners: list[tuple[str, TelemetryListener]] = []

    def _audit(self, who: str, what: str, detail: dict[str, Any]) -> None:
        line = json.dumps({"time": time.time(), "who": who, "what": what, **detail})
        self.audit.append(line.encode())

    def audit_log(self) -> list[dict[str, Any]]:
        """Every record kept, oldest first, across the rotated files."""
        entries: list[dict[str, Any]] = []
        for line in self.audit.lines():
            try:
                entries.append(json.loads(line))
            except ValueError:  # a torn last line after a crash mid-append
                continue
        return entries

    async def _verified_query(self, selector: str, kind: str, params: dict[str, Any] | None = None,
                              request: str | None = None, timeout_s: float = 3.0, snapshot: bool = False
                              ) -> dict[tuple[str, str], dict[str, Any]]:
        """Replies signed by the enrolled key of the device they claim to be, answering this very query (its
        nonce inside) -- or, with ``snapshot``, each device's latest signed telemetry (never an older one)."""
        nonce = None if snapshot else request or secrets.token_hex(12)

        def keep(doc: DeviceDoc, body: BaseModel) -> dict[str, Any]:
            """The believed reply as the plain dict kept (the models are dropped at once: 10k replies held as
            models are ~4x the objects for the garbage collector to walk while the rest arrive)."""
            # site and device last: a reply's own fields (a command reply may carry extra ones) never replace them
            return {**body.model_dump(exclude_none=True), "site": doc.site, "device": doc.device}

        out: dict[tuple[str, str], dict[str, Any]] = {}
        query = params if params is not None else {} if nonce is None else {"nonce": nonce}
        check = self.verifier.replies((kind,), keep, request=nonce, snapshot=snapshot, workers=self.bus.signatures)
        for row in await self.bus.query_checked(selector, check, query, timeout_s=timeout_s):
            out.setdefault((row["site"], row["device"]), row)
        return out

    async def poll(self, site: str = "*", timeout_s: float = 5.0) -> dict[tuple[str, str], dict[str, Any]]:
        """Every device's latest telemetry, as each signed it when it was produced (no signature per poll on
        the devices): verified against its enrolled key, never older than what was already believed, the same
        snapshot believed again only for ``SNAPSHOT_REREAD_S``. Keyed by (site, device)."""
        return await self._verified_query(f"{keys.ROOT}/{site}/dev/*/telemetry", "telemetry", timeout_s=timeout_s,
                                          snapshot=True)

    async def inventory(self, site: str = "*") -> list[dict[str, Any]]:
        """Inventory of the enrolled devices that answer (a reply not signed by its device's key is dropped)."""
        found = await self._verified_query(f"{keys.ROOT}/{site}/dev/*/inventory", "inventory")
        return [found[k] for k in sorted(found)]

    async def status(self, site: str, device: str) -> dict[str, Any] | None:
        """A device's current status (verified), or None if it did not answer in its own name."""
        found = await self._verified_query(keys.status(site, device), "status")
        return found.get((site, device))

    def request(self, action: str, args: dict[str, Any], target: TargetQuery, user: str) -> ActionRequest:
        if len(self.requests) >= MAX_REQUESTS:  # forget the oldest finished requests first
            for old in [k for k, r in self.requests.items() if r.state == "done"][: len(self.requests) -
                                                                                   MAX_REQUESTS + 1]:
                del self.requests[old]
        if len(self.requests) >= MAX_REQUESTS:
            raise ApprovalError(f"{MAX_REQUESTS} requests are still open: approve, run or let them finish first")
        needed = self.approvals_needed if action in DANGEROUS else 0
        req = ActionRequest(f"req-{next(self._ids)}", action, args, target, user, needed)
        req.state = "ready" if needed == 0 else "voting"
        self.requests[req.request_id] = req
        self._audit(user, "request", {"request": req.request_id, "action": action, "args": args,
                                      "approvals_needed": needed})
        return req

    def approve(self, request_id: str, user: str) -> ActionRequest:
        req = self.requests[request_id]
        if req.state not in ("voting", "ready"):  # a late vote re-armed a done request: it could run twice
            raise ApprovalError(f"{request_id} is {req.state}: it takes no more approvals")
        if user == req.requested_by:
            raise ApprovalError("the requester cannot approve their own action")
        if user in req.approvals:
            raise ApprovalError(f"{user} already approved {request_id}")
        req.approvals.append(user)
        if len(req.approvals) >= req.approvals_needed:
            req.state = "ready"
        self._audit(user, "approve", {"request": request_id, "approvals": len(req.approvals)})
        return req

    def _signed(self, site: str, device: str, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """A command: site and device inside the signature, so it means nothing at another site."""
        return sign_document({"site": site, "device": device, "action": action, "args": args,
                              "issued_at": time.time(), "nonce": secrets.token_hex(12)}, self.signing_key)

    async def command(self, site: str, device: str, action: str, args: dict[str, Any], user: str,
                      timeout_s: float = 5.0) -> dict[str, Any]:
        """One signed command to one device (harmless actions only: no approval flow); its verified reply."""
        if action in DANGEROUS:
            raise ApprovalError(f"{action} needs approvals: use request/approve/execute")
        signed = self._signed(site, device, action, args)
        replies = await self._verified_query(keys.command(site, device, action), "reply", signed,
                                             request=signed["signed"]["nonce"], timeout_s=timeout_s)
        return replies.get((site, device)) or {"ok": False, "error": "no reply signed by the device's enrolled key"}

    def follow_telemetry(self, site: str, listener: TelemetryListener) -> None:
        """``listener(document, status)`` for every telemetry message of ``site`` (``*``: every site) believed.

        Each message is checked once per controller however many parts of the process follow it (the service's
        store and an energy link): a second check of the same message would refuse it as a duplicate."""
        if site != "*":
            keys.site_chunk(site)
        self._telemetry_listeners.append((site, listener))
        if site in self._telemetry_sites or "*" in self._telemetry_sites:
            return
        self._telemetry_sites.add(site)

        def on_telemetry(key: str, envelope: Any) -> None:
            if site != "*" and "*" in self._telemetry_sites:
                return  # the every-site subscription delivers this message too
            try:
                doc, body = self.verifier.check(key, envelope, ("telemetry",))
            except MessageRejected:
                return
            assert isinstance(body, DeviceStatus)
            for wanted, follower in self._telemetry_listeners:
                if wanted in ("*", doc.site):
                    follower(doc, body)

        self.bus.subscribe(f"{keys.ROOT}/{site}/dev/*/telemetry", on_telemetry, raw=True)

    def follow_acks(self, site: str) -> None:
        """One events subscription per site for every curtailment (a second one would see each ack as a
        replay of the first, since the verifier tracks each device's sequence numbers). Follow a site well
        before its first curtailment: a peer learns of a new subscription only after a while (longer on a busy
        machine) and drops the acknowledgements it publishes before."""
        if site in self._ack_sites:
            return
        self._ack_sites.add(site)

        def on_event(key: str, envelope: Any) -> None:
            try:
                doc, body = self.verifier.check(key, envelope, ("event",))
            except MessageRejected:
                return
            assert isinstance(body, DeviceEvent)
            broadcast = self._broadcasts.get(body.ack) if body.ack is not None else None
            if broadcast is not None and broadcast.site == doc.site:
                broadcast.record(doc.device, body.stage, body.ok)

        def on_batch(key: str, doc: Any) -> None:
            """A host's batch: each event is checked as if it came on its own device's key (its signature by
            that device's enrolled key, naming this site and that device, is what makes it believed)."""
            events = doc.get("events") if isinstance(doc, dict) else None
            if not isinstance(events, list) or not 0 < len(events) <= MAX_EVENT_BATCH:
                self.bus.metrics.drop("bad_batch")
                return
            for envelope in events:
                signed = envelope.get("signed") if isinstance(envelope, dict) else None
                device = signed.get("device") if isinstance(signed, dict) else None
                try:
                    device_key = keys.events(site, device if isinstance(device, str) else "")
                except ValueError:
                    self.bus.metrics.drop("unsigned")
                    continue
                on_event(device_key, envelope)

        self.bus.subscribe(f"{keys.ROOT}/{site}/dev/*/events", on_event, raw=True)
        self.bus.subscribe(f"{keys.ROOT}/{site}/host/*/events", on_batch)

    async def curtail_site(self, site: str, fraction: float, devices: set[str], user: str,
                           timeout_s: float = 5.0) -> tuple[set[str], float]:
        """The fast path: one signed publication to every device of ``site``; returns (acknowledged, seconds)
        once every device in ``devices`` acknowledged it (accepted: it will apply it) or after ``timeout_s``.
        ``last_broadcast[site]`` keeps following it: which devices report it applied, and when."""
        if isinstance(fraction, bool) or not (isinstance(fraction, int | float) and 0.0 <= fraction <= 1.0):
            raise ValueError(f"a site curtailment is a fraction within 0..1, not {fraction!r}")
        signed = self._signed(site, "*", "curtail", {"fraction": fraction})
        nonce = signed["signed"]["nonce"]
        if site not in self._ack_sites:
            self.follow_acks(site)
            await asyncio.sleep(0.2)  # let the subscription reach the peers before publishing
        broadcast = Broadcast(site, nonce, fraction, frozenset(devices))
        self._broadcasts[nonce] = self.last_broadcast[site] = broadcast
        while len(self._broadcasts) > MAX_BROADCASTS:
            del self._broadcasts[next(iter(self._broadcasts))]
        self.bus.publish(keys.site_curtail(site), signed, control=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(broadcast.all_accepted.wait(), timeout_s)
        elapsed = time.perf_counter() - broadcast.published
        acked = set(broadcast.accepted)
        self._audit(user, "curtail", {"site": site, "fraction": fraction, "acknowledged": len(acked)})
        return acked, elapsed

    async def execute(self, request_id: str, user: str) -> dict[str, dict[str, Any]]:
        """Run a request on every matching device; refuses until enough approvals are in. Results are keyed by
        ``site/device``."""
        req = self.requests[request_id]
        if req.state != "ready":
            self._audit(user, "refused", {"request": request_id, "why": f"state {req.state}"})
            if req.state in ("running", "done"):
                raise ApprovalError(f"{request_id} is {req.state}: an approved request runs once")
            raise ApprovalError(f"{request_id} needs {req.approvals_needed} approvals, has {len(req.approvals)}")
        req.state = "running"  # before the first await: a second execute (a double click) is refused
        targets = [inv for inv in await self.inventory() if req.target.matches(inv)]
        for inv in targets:
            site, device = inv["site"], inv["device"]
            command = self._signed(site, device, req.action, req.args)
            replies = await self._verified_query(keys.command(site, device, req.action), "reply", command,
                                                 request=command["signed"]["nonce"], timeout_s=10.0)
            result = replies.get((site, device)) or {"ok": False,
                                                     "error": "no reply signed by the device's enrolled key"}
            result.pop("site", None)
            result.pop("device", None)
            req.results[keys.device_ref(site, device)] = result
        req.state = "done"
        ok = sum(1 for r in req.results.values() if r.get("ok"))
        self._audit(user, "execute", {"request": request_id, "targets": len(targets), "ok": ok})
        return req.results
