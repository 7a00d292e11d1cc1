"""The controller's gate for device-originated messages: believed only if signed by the key enrolled for
that site/device, naming the same site/device as the key expression it arrived on, fresh, never replayed,
within its rate, and valid against its schema. Everything else is dropped and counted by reason.

A message is checked straight from the bytes it arrived as (the compact layout of ``envelope.sign_payload``):
the signature is verified over the document bytes and the document is parsed once, by pydantic. A revoked
device (its pinned key removed, by ``mos fleet revoke`` in another process too) is refused from the next
second on: the registry file is re-read at most once a second, whatever the traffic.

Telemetry and events carry a per-device sequence number: a pushed message is believed once (an older one is a
``replay``, the same one again a ``duplicate``). A telemetry *poll* is answered with the device's last signed
snapshot, so there the same snapshot is believed again -- for ``SNAPSHOT_REREAD_S`` after the controller first
believed it (its own clock: a copy of a dead device's last snapshot stops counting), never an older one. A
snapshot read again byte for byte is not verified a second time: the controller keeps each device's last
believed telemetry payload with the key it verified against, and the same bytes under the same enrolled key
verify the same way (every other check still runs)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from coincurve import PublicKeyXOnly
from pydantic import BaseModel

from openmos.base.ratelimit import TokenBucket
from openmos.fleet import keys
from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.envelope import signed_part, split_payload, verify, verify_bytes
from openmos.fleet.messages import (
    SNAPSHOT_REREAD_S,
    BusMetrics,
    DeviceDoc,
    MessageRejected,
    body_of,
    decode,
    parse_device_doc,
)
from openmos.fleet.sigworker import SignatureBatches, SignatureWorkers
from openmos.security.signing import SignatureError

MAX_SKEW_S = 300.0  # a device's clock may be this far from the controller's
STREAMED = ("telemetry", "event")  # kinds with a per-device sequence (replies are bound to a query nonce)
T = TypeVar("T")


CHECK_BATCH = 64  # replies of a query checked together: their signatures go to a worker process at once


@dataclass(slots=True)
class _Arrived:
    """A message that passed the checks before its signature's (its key expression names an enrolled device)."""

    site: str
    device: str
    public: PublicKeyXOnly
    raw_key: bytes  # the same enrolled key, as its 32 bytes
    envelope: Any  # the payload bytes, or decoded JSON (an envelope in another layout than the compact one)
    compact: tuple[bytes, bytes] | None  # (signature, document bytes) of a compact payload
    known: bool  # these very bytes were believed before under this very key: not verified a second time

    @property
    def batched(self) -> bool:
        """Verified in a batch (else here, by ``verify``: the parsed layout, or a signature of a wrong size)."""
        return self.compact is not None and not self.known and len(self.compact[0]) == 64


class DeviceVerifier:
    verify_signature = staticmethod(verify_bytes)  # (signature, document bytes, enrolled key) -> None or raise

    def __init__(self, registry: EnrollmentRegistry, metrics: BusMetrics, *, rate_per_s: float = 5.0,
                 burst: float = 20.0) -> None:
        self.registry = registry
        self.metrics = metrics
        self.rate_per_s, self.burst = rate_per_s, burst
        self.reread_s = SNAPSHOT_REREAD_S
        self._last_seq: dict[tuple[str, str, str], tuple[int, float]] = {}  # (seq, monotonic time first believed)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._verified: dict[tuple[str, str], tuple[PublicKeyXOnly, bytes]] = {}  # last believed telemetry

    def check(self, key: str, envelope: Any, kinds: tuple[str, ...], request: str | None = None,
              snapshot: bool = False) -> tuple[DeviceDoc, BaseModel]:
        """(document, validated body); MessageRejected (already counted) if the message is not believed.

        ``envelope`` is the payload as received (bytes) or already decoded JSON; ``snapshot``: a reply to a
        telemetry poll (the device's last snapshot may be read again)."""
        try:
            arrived = self._arrive(key, envelope)
            return self._believe(arrived, self._verify(arrived), kinds, request, snapshot)
        except MessageRejected as exc:
            self.metrics.drop(exc.reason)
            raise

    def replies(self, kinds: tuple[str, ...], keep: Callable[[DeviceDoc, BaseModel], T], *,
                request: str | None = None, snapshot: bool = False, workers: SignatureWorkers | None = None
                ) -> CheckedReplies[T]:
        """A query's replies checked as they arrive, exactly as ``check`` checks one (``keep`` turns a believed
        one into what the query returns); their signatures verified in batches by ``workers``."""
        return CheckedReplies(self, kinds, keep, request, snapshot, self.batches(workers))

    def batches(self, workers: SignatureWorkers | None) -> SignatureBatches:
        """Where a query's signatures are verified."""
        return SignatureBatches(workers)

    def _arrive(self, key: str, envelope: Any) -> _Arrived:
        try:
            site, device, _ = keys.parse_device_key(key)
        except ValueError:
            raise MessageRejected("unsigned") from None
        compact = split_payload(envelope) if isinstance(envelope, bytes) else None
        if compact is None:
            if isinstance(envelope, bytes):
                envelope = decode(envelope)
            try:
                signed_part(envelope)
            except SignatureError:
                raise MessageRejected("unsigned") from None
        self.registry.refresh()  # at most one stat() a second: revocations reach a running controller
        enrolled = self.registry.enrolled_key(site, device)
        if enrolled is None:
            raise MessageRejected("not_enrolled", f"{site}/{device}")
        public, raw_key = enrolled
        seen = self._verified.get((site, device)) if compact is not None else None
        known = seen is not None and seen[0] is public and seen[1] == envelope
        return _Arrived(site, device, public, raw_key, envelope, compact, known)

    def _verify(self, arrived: _Arrived, valid: bool | None = None) -> dict[str, Any] | bytes:
        """The signed document (bytes of a compact payload, else parsed) if its signature verifies against the
        enrolled key; ``valid``: the answer of a batch that verified it already."""
        try:
            if arrived.compact is None:
                return verify(arrived.envelope, arrived.public)
            if not arrived.known:
                if valid is None or not arrived.batched:
                    self.verify_signature(*arrived.compact, arrived.public)
                elif not valid:
                    raise SignatureError("signature does not verify against the enrolled key")
            return arrived.compact[1]
        except SignatureError:
            raise MessageRejected("bad_signature", f"{arrived.site}/{arrived.device}") from None

    def _believe(self, arrived: _Arrived, raw: dict[str, Any] | bytes, kinds: tuple[str, ...],
                 request: str | None, snapshot: bool) -> tuple[DeviceDoc, BaseModel]:
        site, device = arrived.site, arrived.device
        doc = parse_device_doc(raw)
        if (doc.site, doc.device) != (site, device):
            raise MessageRejected("identity_mismatch", f"{doc.site}/{doc.device} on {site}/{device}")
        if doc.kind not in kinds:
            raise MessageRejected("wrong_kind", doc.kind)
        if request is not None and doc.request != request:
            raise MessageRejected("wrong_request")
        if abs(time.time() - doc.ts) > MAX_SKEW_S:
            raise MessageRejected("stale")
        if doc.kind in STREAMED:
            self._sequence(site, device, doc, snapshot)
        body = body_of(doc)
        if doc.kind == "telemetry" and arrived.compact is not None:
            self._verified[site, device] = (arrived.public, arrived.envelope)
        self.metrics.accept(doc.kind)
        return doc, body

    def _sequence(self, site: str, device: str, doc: DeviceDoc, snapshot: bool) -> None:
        """Refuse an older message than the last believed one (and the same one, but for a re-read poll
        snapshot that is still recent); a new one takes a token from the device's rate bucket."""
        seq_key = (site, device, doc.kind)
        last, first_believed = self._last_seq.get(seq_key, (-1, 0.0))
        now = time.monotonic()
        if doc.seq < last:
            raise MessageRejected("replay")
        if doc.seq == last:
            if not snapshot:
                raise MessageRejected("duplicate")  # the very message already believed, delivered again
            if now - first_believed > self.reread_s:
                raise MessageRejected("stale", f"{site}/{device}: the same snapshot for {now - first_believed:.0f} s")
            return
        bucket = self._buckets.get((site, device))
        if bucket is None:
            bucket = self._buckets[(site, device)] = TokenBucket(self.rate_per_s, self.burst)
        if not bucket.take():
            raise MessageRejected("rate_limited", f"{site}/{device}")
        self._last_seq[seq_key] = (doc.seq, now)


class CheckedReplies(Generic[T]):
    """One query's replies, checked as they arrive, in arrival order (``FleetBus.query_checked``).

    What needs no signature is checked at once (key expression, layout, enrolled device); the signatures of
    every ``CHECK_BATCH`` replies go to a worker process together, and while it verifies them the next replies
    arrive and are read; a batch is finished (document, identity, kind, request, time, sequence, schema, as
    ``DeviceVerifier.check``) when its answer is in. Nothing is believed before its signature verified."""

    def __init__(self, verifier: DeviceVerifier, kinds: tuple[str, ...], keep: Callable[[DeviceDoc, BaseModel], T],
                 request: str | None, snapshot: bool, batches: SignatureBatches) -> None:
        self._verifier, self._kinds, self._keep = verifier, kinds, keep
        self._request, self._snapshot = request, snapshot
        self._batches = batches
        self._arrived: list[_Arrived | MessageRejected] = []
        self._sent: deque[tuple[list[_Arrived | MessageRejected], bool]] = deque()  # (batch, answer due)

    def feed(self, key: str, payload: bytes) -> list[T]:
        """Take one reply; the replies believed since the last call (of batches whose answers are in)."""
        try:
            self._arrived.append(self._verifier._arrive(key, payload))
        except MessageRejected as exc:
            self._arrived.append(exc)
        if len(self._arrived) < CHECK_BATCH:
            return []
        self._send(last=False)
        return self._collect(wait=False)

    def finish(self) -> list[T]:
        """Every reply not returned yet (waiting for the last answers)."""
        self._send(last=True)
        return self._collect(wait=True)

    def close(self) -> None:
        self._batches.close()

    def _send(self, last: bool) -> None:
        batch, self._arrived = self._arrived, []
        if not batch:
            return
        items = [(a.raw_key, *a.compact) for a in batch if isinstance(a, _Arrived) and a.batched
                 and a.compact is not None]
        if items:
            self._batches.send(items, last=last)
        self._sent.append((batch, bool(items)))

    def _collect(self, wait: bool) -> list[T]:
        out: list[T] = []
        while self._sent:
            batch, due = self._sent[0]
            if due and not wait and not self._batches.ready():
                break
            answers = iter(self._batches.receive() if due else b"")
            self._sent.popleft()
            for arrived in batch:
                try:
                    if isinstance(arrived, MessageRejected):
                        raise arrived
                    valid = bool(next(answers)) if arrived.batched else None
                    raw = self._verifier._verify(arrived, valid)
                    doc, body = self._verifier._believe(arrived, raw, self._kinds, self._request, self._snapshot)
                except MessageRejected as exc:
                    self._verifier.metrics.drop(exc.reason)
                    continue
                out.append(self._keep(doc, body))
        return out
