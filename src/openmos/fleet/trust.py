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
from typing import Any

from coincurve import PublicKeyXOnly
from pydantic import BaseModel

from openmos.fleet import keys
from openmos.fleet.enroll import EnrollmentRegistry, TokenBucket
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
from openmos.security.signing import SignatureError

MAX_SKEW_S = 300.0  # a device's clock may be this far from the controller's
STREAMED = ("telemetry", "event")  # kinds with a per-device sequence (replies are bound to a query nonce)


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
            return self._check(key, envelope, kinds, request, snapshot)
        except MessageRejected as exc:
            self.metrics.drop(exc.reason)
            raise

    def _check(self, key: str, envelope: Any, kinds: tuple[str, ...], request: str | None, snapshot: bool
               ) -> tuple[DeviceDoc, BaseModel]:
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
        public = self.registry.key_for(site, device)
        if public is None:
            raise MessageRejected("not_enrolled", f"{site}/{device}")
        try:
            if compact is None:
                raw: dict[str, Any] | bytes = verify(envelope, public)
            else:
                seen = self._verified.get((site, device))
                if seen is None or seen[0] is not public or seen[1] != envelope:  # else: these very bytes verified
                    self.verify_signature(*compact, public)
                raw = compact[1]
        except SignatureError:
            raise MessageRejected("bad_signature", f"{site}/{device}") from None
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
        if doc.kind == "telemetry" and compact is not None:
            self._verified[site, device] = (public, envelope)
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
