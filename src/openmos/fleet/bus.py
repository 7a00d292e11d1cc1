"""The fleet bus: a zenoh session in peer mode (no broker), bridged to asyncio.

Nodes listen on an endpoint and connect to the peers they are told about; multicast scouting is off by
default so nothing leaves the configured links. Zenoh calls back on its own threads; this wrapper hands
every message to the asyncio loop, bounded: payloads over ``MAX_PAYLOAD`` and a backlog over
``MAX_BACKLOG`` are dropped and counted, never queued without limit.

With a ``TlsIdentity`` the session speaks only zenoh's TLS with mutual authentication against the fleet CA
(plain TCP is refused), and zenoh's access control lets each role (by certificate common name) send only
what that role may send: devices publish telemetry/events under their site and answer queries; only a
controller queries devices, publishes site commands and answers enrollment. A device certificate issued
for a site (``openmos-device@<site>``) gets through a controller only under ``openmos/<site>/``; which
device within the site is the controller's check (``trust``: the enrolled key of the key expression's
device), since one process may host many devices on one session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import zenoh

from openmos.fleet.keys import ROOT, site_chunk
from openmos.fleet.messages import BusMetrics, MessageRejected, check_size, decode
from openmos.fleet.pki import TlsIdentity, common_name
from openmos.fleet.sigworker import SignatureWorkers

log = logging.getLogger(__name__)

MAX_BACKLOG = 50_000  # messages handed to the loop but not yet handled

# (message, key expression) a device may send to a controller, and a controller to a device.
DEVICE_SENDS = [("put", "openmos/*/dev/*/telemetry"), ("put", "openmos/*/dev/*/events"),
                ("put", "openmos/*/host/*/events"),
                ("declare_queryable", "openmos/*/dev/**"), ("reply", "openmos/*/dev/**"),
                ("declare_subscriber", "openmos/*/site/**"), ("query", "openmos/*/enroll/*")]
CONTROLLER_SENDS = [("declare_subscriber", "openmos/*/dev/**"), ("declare_subscriber", "openmos/*/host/**"),
                    ("query", "openmos/*/dev/**"),
                    ("put", "openmos/*/site/**"), ("declare_queryable", "openmos/*/enroll/*"),
                    ("reply", "openmos/*/enroll/*")]
ENROLLEE_SENDS = [("query", "openmos/*/enroll/*")]
ENROLLEE_RECEIVES = [("declare_queryable", "openmos/*/enroll/*"), ("reply", "openmos/*/enroll/*")]

Role = Literal["controller", "device", "enrollee"]
T = TypeVar("T")


class ReplyCheck(Protocol[T]):
    """Checks a query's replies as they arrive (``FleetBus.query_checked``)."""

    def feed(self, key: str, payload: bytes) -> list[T]: ...  # what is believed so far (may be none yet)

    def finish(self) -> list[T]: ...  # the rest, once every reply has arrived

    def close(self) -> None: ...


def _rules(prefix: str, flow: str, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    by_message: dict[str, list[str]] = {}
    for message, key in pairs:
        by_message.setdefault(message, []).append(key)
    return [{"id": f"{prefix}-{flow}-{message}", "messages": [message], "flows": [flow], "permission": "allow",
             "key_exprs": keys} for message, keys in by_message.items()]


def _at_site(pairs: list[tuple[str, str]], site: str) -> list[tuple[str, str]]:
    return [(message, key.replace(f"{ROOT}/*/", f"{ROOT}/{site}/", 1)) for message, key in pairs]


def access_control(role: Role, sites: tuple[str, ...] = ()) -> dict[str, Any]:
    """zenoh ``access_control`` for a node of ``role``: default deny, per-peer-role allow lists.

    On a controller, a device certificate issued for one of ``sites`` (``openmos-device@<site>``) may only
    send under ``openmos/<site>/``; one issued without a site (``openmos-device``) under any site. zenoh
    reads this once, when the session opens: a site added later needs the controller's bus reopened."""
    rules: list[dict[str, Any]] = []
    policies: list[dict[str, Any]] = []
    subjects = [{"id": r, "cert_common_names": [common_name(r)]} for r in ("controller", "device", "enrollee")]
    subjects += [{"id": f"device@{site}", "cert_common_names": [common_name("device", site_chunk(site))]}
                 for site in sites]

    def allow(subject: str, ingress: list[tuple[str, str]], egress: list[tuple[str, str]]) -> None:
        these = _rules(subject, "ingress", ingress) + _rules(subject, "egress", egress)
        rules.extend(these)
        policies.append({"id": f"{subject}-policy", "rules": [r["id"] for r in these], "subjects": [subject]})

    if role == "controller":
        everything = [(m, "openmos/**") for m in ("put", "declare_subscriber", "query", "declare_queryable",
                                                   "reply")]
        allow("controller", everything, everything)
        allow("device", DEVICE_SENDS, CONTROLLER_SENDS)
        for site in sites:  # what such a device sends is held to its site; what it is sent is not (the
            # controller's own wildcard declarations and queries, e.g. openmos/*/dev/*/status, must reach it)
            allow(f"device@{site}", _at_site(DEVICE_SENDS, site), CONTROLLER_SENDS)
        allow("enrollee", ENROLLEE_SENDS, ENROLLEE_RECEIVES)
    elif role == "device":
        allow("controller", CONTROLLER_SENDS, DEVICE_SENDS)
    else:
        allow("controller", ENROLLEE_RECEIVES, ENROLLEE_SENDS)
    return {"enabled": True, "default_permission": "deny", "rules": rules, "subjects": subjects,
            "policies": policies}


@dataclass(frozen=True)
class BusConfig:
    listen: list[str] = field(default_factory=list)  # e.g. ["tls/127.0.0.1:7447"]
    connect: list[str] = field(default_factory=list)  # peers or routers
    mode: str = "peer"  # "peer" on a LAN; "client" behind a router between sites
    multicast_scouting: bool = False
    tls: TlsIdentity | None = None  # mutual TLS against the fleet CA, plain TCP refused
    role: Role | None = None  # with ``tls``: zenoh access control for this role
    sites: tuple[str, ...] = ()  # a controller's sites: their site-bound device certificates are let in

    def to_zenoh(self) -> zenoh.Config:
        conf = zenoh.Config()
        conf.insert_json5("mode", json.dumps(self.mode))
        conf.insert_json5("listen/endpoints", json.dumps(self.listen))
        conf.insert_json5("connect/endpoints", json.dumps(self.connect))
        conf.insert_json5("scouting/multicast/enabled", json.dumps(self.multicast_scouting))
        if self.tls is not None:
            if any(not e.startswith("tls/") for e in self.listen + self.connect):
                raise ValueError("with TLS every endpoint must be tls/<host>:<port>")
            conf.insert_json5("transport/link/protocols", json.dumps(["tls"]))
            conf.insert_json5("transport/link/tls", json.dumps(self.tls.zenoh_tls()))
            if self.role is not None:
                conf.insert_json5("access_control", json.dumps(access_control(self.role, self.sites)))
        return conf


def _direct(callback: Callable[[Any], None]) -> Any:
    """Run ``callback`` on zenoh's own network thread. zenoh-python's default gives every subscriber and
    queryable its own Python thread: 10 declarations per device node made 10k devices 100k threads. Our
    callbacks never block (they hand work to the loop), so they can run where the data arrives."""
    return zenoh.handlers.Callback(callback, indirect=False)


Reply = dict[str, Any] | bytes  # a JSON document, or a payload already serialised (a device's signed envelope)
QueryHandler = Callable[[str, dict[str, Any]], Coroutine[Any, Any, Reply]]
MultiQueryHandler = Callable[[str, dict[str, Any]], Coroutine[Any, Any, list[tuple[str, Reply]]]]


def _payload(doc: Reply) -> bytes:
    return doc if isinstance(doc, bytes) else json.dumps(doc, separators=(",", ":")).encode()


class FleetBus:
    def __init__(self, config: BusConfig, metrics: BusMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or BusMetrics()
        self._session: Any = None
        self._declared: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self.signatures = SignatureWorkers()  # worker processes verifying device signatures (started on use)

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing.clear()
        if self.signatures.closed:  # opened again after close()
            self.signatures = SignatureWorkers()
        self._session = await asyncio.to_thread(zenoh.open, self.config.to_zenoh())

    async def close(self) -> None:
        """Stop delivering first (callbacks return at once), then undeclare and close the session."""
        self._closing.set()
        declared, self._declared = self._declared, []
        session, self._session = self._session, None


        def shut() -> None:
            for obj in declared:
                obj.undeclare()
            if session is not None:
                session.close()
            self.signatures.close()

        await asyncio.to_thread(shut)

    @property
    def zid(self) -> str:
        return str(self._session.zid())

    def peers(self) -> list[str]:
        return [str(z) for z in self._session.info.peers_zid()]

    def publish(self, key: str, doc: Reply, *, control: bool = False) -> None:
        """Put ``doc`` on ``key``. Telemetry (the default) may be dropped when the network is congested (the
        next interval replaces it); ``control`` messages (commands, acknowledgements) are never dropped:
        zenoh blocks the sender until they are queued, and they go ahead of telemetry at a higher priority."""
        if self._session is None:
            return
        payload = _payload(doc)
        if control:
            self._session.put(key, payload, congestion_control=zenoh.CongestionControl.BLOCK,
                              priority=zenoh.Priority.INTERACTIVE_HIGH)
        else:
            self._session.put(key, payload)

    def _deliver(self, callback: Callable[..., None], *args: Any) -> None:
        """Hand one message to the loop (from a zenoh thread), dropping it if the loop is far behind."""
        loop = self._loop
        if loop is None or self._closing.is_set():
            return
        with self._backlog_lock:
            if self._backlog >= MAX_BACKLOG:
                self.metrics.drop("overload")
                return
            self._backlog += 1

        def run() -> None:
            with self._backlog_lock:
                self._backlog -= 1
            if not self._closing.is_set():
                callback(*args)

        with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
            loop.call_soon_threadsafe(run)

    def subscribe(self, key: str, callback: Callable[[str, Any], None], raw: bool = False) -> None:
        """``callback(key, decoded JSON)`` on the loop; oversized or non-JSON payloads are dropped and counted.
        With ``raw`` the callback gets the payload bytes (size-checked only) and parses them itself."""
        def on_sample(sample: Any) -> None:
            if self._closing.is_set():
                return
            payload = sample.payload.to_bytes()
            try:
                doc = check_size(payload) if raw else decode(payload)
            except MessageRejected as exc:
                self.metrics.drop(exc.reason)
                return
            self._deliver(callback, str(sample.key_expr), doc)

        self._declared.append(self._session.declare_subscriber(key, _direct(on_sample)))

    def serve(self, key: str, handler: QueryHandler) -> None:
        """Answer queries on ``key`` with ``handler`` running on the asyncio loop (one reply per query).

        A reply names the concrete key it comes from (the device's own), not the query's wildcard."""
        concrete = "*" not in key

        async def one(selector: str, params: dict[str, Any]) -> list[tuple[str, Reply]]:
            reply_key = key if concrete else selector
            try:
                return [(reply_key, await handler(reply_key, params))]
            except Exception as exc:  # the handler's failure becomes the reply, not a crash
                return [(reply_key, {"ok": False, "error": f"handler failed: {type(exc).__name__}"})]

        self.serve_many(key, one)

    def serve_many(self, key: str, handler: MultiQueryHandler) -> None:
        """Answer queries on ``key`` with ``handler(selector, params)`` on the asyncio loop: a list of
        (concrete key, reply) -- none, one, or one per device a process hosts that the selector matches.

        The zenoh thread never waits for the handler: the query is kept and answered (then dropped) when the
        handler finishes, so 10k queries in flight do not pin 10k zenoh threads. The querier's own timeout
        bounds how long an answer is useful; handlers are this node's own code and always finish."""
        loop = self._loop
        assert loop is not None

        def on_query(query: Any) -> None:
            if self._closing.is_set():
                query.drop()
                return
            selector = str(query.key_expr)
            payload = query.payload.to_bytes() if query.payload is not None else b"{}"
            try:
                params = decode(payload or b"{}")
            except MessageRejected as exc:
                self.metrics.drop(exc.reason)
                params = {"_error": exc.reason}
            if not isinstance(params, dict):
                params = {"_error": "payload is not an object"}
            with self._backlog_lock:
                if self._backlog >= MAX_BACKLOG:
                    self.metrics.drop("overload")
                    query.drop()
                    return
                self._backlog += 1

            def answer(future: concurrent.futures.Future[list[tuple[str, Reply]]]) -> None:
                with self._backlog_lock:
                    self._backlog -= 1
                try:
                    results = future.result()
                except Exception as exc:  # the handler's failure becomes the reply, not a crash
                    results = [(selector, {"ok": False, "error": f"handler failed: {type(exc).__name__}"})]
                try:
                    for reply_key, result in results:
                        if self._closing.is_set():
                            break
                        query.reply(reply_key, _payload(result))
                except Exception as exc:  # zenoh refuses replies (ACL, closing, wildcard key): log, never crash
                    log.debug("fleet bus: reply to %s not sent: %s", selector, exc)
                finally:
                    query.drop()

            try:
                future = asyncio.run_coroutine_threadsafe(handler(selector, params), loop)
            except RuntimeError:  # loop closed
                query.drop()
                return
            future.add_done_callback(answer)

        self._declared.append(self._session.declare_queryable(key, _direct(on_query)))

    def _replies(self, selector: str, params: Reply | None, timeout_s: float, max_replies: int
                 ) -> Iterator[tuple[str, bytes]]:
        """(key, payload) of each reply as it arrives (on the calling thread), size-checked; at most
        ``max_replies`` (the rest dropped and counted)."""
        session = self._session
        if session is None:
            return
        received = 0
        replies = session.get(selector, payload=_payload(params or {}), timeout=timeout_s,
                              target=zenoh.QueryTarget.ALL, consolidation=zenoh.ConsolidationMode.NONE)
        for reply in replies:
            if reply.ok is None:
                continue
            if received >= max_replies:
                self.metrics.drop("too_many_replies")
                continue
            try:
                data = check_size(reply.ok.payload.to_bytes())
            except MessageRejected as exc:
                self.metrics.drop(exc.reason)
                continue
            received += 1
            yield str(reply.ok.key_expr), data

    async def query(self, selector: str, params: Reply | None = None, timeout_s: float = 3.0,
                    max_replies: int = 200_000, raw: bool = False) -> list[tuple[str, Any]]:
        """Replies to ``selector`` (which may match many devices), decoded; bad ones dropped and counted.
        With ``raw`` replies are handed over as payload bytes (size-checked only), not decoded."""

        def run() -> list[tuple[str, Any]]:
            out: list[tuple[str, Any]] = []
            for key, data in self._replies(selector, params, timeout_s, max_replies):
                if raw:
                    out.append((key, data))
                    continue
                try:
                    out.append((key, decode(data)))
                except MessageRejected as exc:
                    self.metrics.drop(exc.reason)
            return out

        return await asyncio.to_thread(run)

    async def query_checked(self, selector: str, check: ReplyCheck[T], params: Reply | None = None,
                            timeout_s: float = 3.0, max_replies: int = 200_000) -> list[T]:
        """Replies to ``selector``, each handed to ``check`` as it arrives (payload bytes, size-checked) on
        one thread off the event loop; what ``check`` believes, in arrival order. ``check`` may hand work
        elsewhere (signatures to ``signatures``' worker processes) and return results later."""

        def run() -> list[T]:
            out: list[T] = []
            try:
                for key, data in self._replies(selector, params, timeout_s, max_replies):
                    out.extend(check.feed(key, data))
                out.extend(check.finish())
            finally:
                check.close()
            return out

        return await asyncio.to_thread(run)
