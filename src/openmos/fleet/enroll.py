"""Device enrollment: which device keys the controller believes, and how a new device gets there.

A device generates its signing key (``envelope.DeviceKey``) and asks to enroll with a signed request
(proof that it holds the key).
With a valid one-time token it is enrolled at once; without one the request waits, capped and rate
limited, for an operator to approve it (comparing the key fingerprint the device shows). From then on the
key is *pinned*: the controller drops every message for that site/device that this key did not sign, and a
second request with another key is refused until an operator revokes the first. A revoked key is
remembered: the device cannot ask to enroll it again (neither with a token nor for approval), so a device
taken out of the fleet stays out; it comes back only with a new key.

State lives in one JSON file (``enrollment.json``), changed under an exclusive file lock by re-reading it
first, so the CLI (``mos fleet token/approve/revoke``) and a running controller never lose each other's
changes. Token secrets are stored only as SHA-256 hashes.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coincurve import PublicKeyXOnly

from openmos.base.files import atomic_write
from openmos.base.ratelimit import TokenBucket
from openmos.fleet.envelope import parse_public
from openmos.security.signing import SignatureError

MAX_PENDING = 1000
PENDING_TTL_S = 24 * 3600
DEFAULT_TOKEN_TTL_S = 3600.0


class EnrollmentRefused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def fingerprint(public_b64: str) -> str:
    """Short key fingerprint an operator compares with the one the device shows."""
    digest = hashlib.sha256(public_b64.encode()).hexdigest()
    return ":".join(digest[i:i + 4] for i in range(0, 16, 4))


@dataclass
class Enrolled:
    public_key: str
    enrolled_at: float
    via: str  # "token", "approval", "operator"


@dataclass
class Pending:
    public_key: str
    requested_at: float
    csr: str | None = None
    source: str = "fleet bus"  # how the request arrived (shown to the approving operator)


@dataclass
class _State:
    enrolled: dict[str, Enrolled] = field(default_factory=dict)  # "site/device" -> key
    pending: dict[str, Pending] = field(default_factory=dict)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)  # sha256(token) -> {expires, site}
    revoked: dict[str, dict[str, Any]] = field(default_factory=dict)  # public key -> {device, at}

    def to_json(self) -> bytes:
        return json.dumps({"enrolled": {k: asdict(v) for k, v in self.enrolled.items()},
                           "pending": {k: asdict(v) for k, v in self.pending.items()},
                           "tokens": self.tokens, "revoked": self.revoked}, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> _State:
        doc = json.loads(raw or b"{}")
        return cls({k: Enrolled(**v) for k, v in doc.get("enrolled", {}).items()},
                   {k: Pending(**v) for k, v in doc.get("pending", {}).items()}, dict(doc.get("tokens", {})),
                   dict(doc.get("revoked", {})))


def _name(site: str, device: str) -> str:
    return f"{site}/{device}"


class EnrollmentRegistry:
    """Pinned device keys, pending requests and one-time tokens (in memory with ``path=None``)."""

    def __init__(self, path: Path | None = None, *, max_pending: int = MAX_PENDING, requests_per_s: float = 20.0,
                 burst: float = 100.0) -> None:
        self.path = path
        self.max_pending = max_pending
        self.limiter = TokenBucket(requests_per_s, burst)
        self._state = _State()
        self._keys: dict[str, tuple[PublicKeyXOnly, bytes]] = {}  # parsed key, its 32 bytes
        self._raw: dict[str, str] = {}
        self._mtime = 0.0
        self._checked = 0.0
        self.refresh(force=True)

    # -- persistence -------------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Pick up changes another process (the CLI) made to the file; cheap, at most once a second."""
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < 1.0:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if force or mtime != self._mtime:
            self._load(self.path.read_bytes())
            self._mtime = mtime

    def _load(self, raw: bytes) -> None:
        self._state = _State.from_json(raw)
        self._sync_keys()

    def _sync_keys(self) -> None:
        """Parsed key objects for the enrolled entries (only new or changed ones are parsed)."""
        keys: dict[str, tuple[PublicKeyXOnly, bytes]] = {}
        for name, entry in self._state.enrolled.items():
            known = self._keys.get(name)
            if known is not None and self._raw.get(name) == entry.public_key:
                keys[name] = known
                continue
            with contextlib.suppress(SignatureError):
                keys[name] = (parse_public(entry.public_key), base64.b64decode(entry.public_key))
        self._keys = keys
        self._raw = {name: entry.public_key for name, entry in self._state.enrolled.items()}

    @contextlib.contextmanager
    def _change(self) -> Iterator[_State]:
        """Read-modify-write under an exclusive lock (consistent with other processes)."""
        if self.path is None:
            yield self._state
            self._sync_keys()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.path.exists():
                self._load(self.path.read_bytes())
            yield self._state
            data = self._state.to_json()
            atomic_write(self.path, data)
            self._load(data)
            self._mtime = self.path.stat().st_mtime
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- queries -----------------------------------------------------------------------------------

    def key_for(self, site: str, device: str) -> PublicKeyXOnly | None:
        found = self._keys.get(_name(site, device))
        return found[0] if found is not None else None

    def enrolled_key(self, site: str, device: str) -> tuple[PublicKeyXOnly, bytes] | None:
        """The pinned key, parsed and as its 32 bytes (both from the same entry)."""
        return self._keys.get(_name(site, device))

    def is_enrolled(self, site: str, device: str) -> bool:
        return _name(site, device) in self._keys

    @property
    def enrolled(self) -> dict[str, Enrolled]:
        return dict(self._state.enrolled)

    def sites(self) -> set[str]:
        """Every site this registry knows of: its enrolled and waiting devices, its site-bound tokens."""
        names = [*self._state.enrolled, *self._state.pending]
        return {n.split("/", 1)[0] for n in names} | {t["site"] for t in self._state.tokens.values() if t.get("site")}

    @property
    def pending(self) -> dict[str, Pending]:
        return dict(self._state.pending)

    # -- changes -----------------------------------------------------------------------------------

    def issue_token(self, ttl_s: float = DEFAULT_TOKEN_TTL_S, site: str | None = None) -> str:
        """A one-time enrollment token (shown once; only its hash is kept)."""
        token = secrets.token_urlsafe(24)
        with self._change() as state:
            now = time.time()
            state.tokens = {h: t for h, t in state.tokens.items() if t["expires"] > now}
            state.tokens[hashlib.sha256(token.encode()).hexdigest()] = {"expires": now + ttl_s, "site": site}
        return token

    def pin(self, site: str, device: str, public_key: str, via: str = "operator") -> None:
        """Enroll a device's key directly (an operator with the key from a provisioning manifest)."""
        parse_public(public_key)
        with self._change() as state:
            state.pending.pop(_name(site, device), None)
            state.revoked.pop(public_key, None)  # the operator's explicit decision overrides a revocation
            state.enrolled[_name(site, device)] = Enrolled(public_key, time.time(), via)

    def pin_many(self, devices: list[tuple[str, str, str]], via: str = "operator") -> None:
        """Pin many (site, device, public key) at once (a provisioning manifest)."""
        for *_, public_key in devices:
            parse_public(public_key)
        with self._change() as state:
            now = time.time()
            for site, device, public_key in devices:
                state.pending.pop(_name(site, device), None)
                state.enrolled[_name(site, device)] = Enrolled(public_key, now, via)

    def request(self, site: str, device: str, public_key: str, token: str | None = None,
                csr: str | None = None, source: str = "fleet bus") -> str:
        """Handle a (signature-checked) enrollment request: "enrolled" or "pending"; EnrollmentRefused else."""
        name = _name(site, device)
        self.refresh()
        if public_key in self._state.revoked:
            was = self._state.revoked[public_key].get("device")
            raise EnrollmentRefused("key_revoked", f"this key was revoked (for {was}): enroll a new key")
        current = self._state.enrolled.get(name)
        if current is not None:
            if current.public_key == public_key:
                return "enrolled"
            raise EnrollmentRefused("key_conflict", f"{name} is enrolled with another key: an operator must "
                                                    "revoke it first")
        if token is not None:
            digest = hashlib.sha256(token.encode()).hexdigest()
            with self._change() as state:
                entry = state.tokens.pop(digest, None)  # one-time: consumed even if the rest fails
                if entry is None or entry["expires"] < time.time():
                    raise EnrollmentRefused("bad_token", "enrollment token unknown, used or expired")
                if entry.get("site") not in (None, site):
                    raise EnrollmentRefused("bad_token", f"this token is for site {entry['site']}")
                state.pending.pop(name, None)
                state.enrolled[name] = Enrolled(public_key, time.time(), "token")
            return "enrolled"
        waiting = self._state.pending.get(name)
        if waiting is not None:
            if waiting.public_key != public_key:
                raise EnrollmentRefused("key_conflict", f"{name} already waits for approval with another key")
            return "pending"
        if not self.limiter.take():
            raise EnrollmentRefused("rate_limited", "too many enrollment requests: try again later")
        with self._change() as state:
            now = time.time()
            state.pending = {k: p for k, p in state.pending.items() if now - p.requested_at < PENDING_TTL_S}
            if len(state.pending) >= self.max_pending:
                raise EnrollmentRefused("pending_full", f"{len(state.pending)} requests already wait for approval")
            state.pending[name] = Pending(public_key, now, csr, source[:128])
        return "pending"

    def approve(self, site: str, device: str, expected_fingerprint: str | None = None) -> Enrolled:
        """Pin a waiting request's key (the CLI and the dashboard both come here). With
        ``expected_fingerprint``, only if the waiting key is still the one the operator compared."""
        name = _name(site, device)
        with self._change() as state:
            self._waiting(state, name, expected_fingerprint)
            waiting = state.pending.pop(name)
            entry = state.enrolled[name] = Enrolled(waiting.public_key, time.time(), "approval")
        return entry

    def reject(self, site: str, device: str, expected_fingerprint: str | None = None) -> None:
        name = _name(site, device)
        with self._change() as state:
            self._waiting(state, name, expected_fingerprint)
            del state.pending[name]

    @staticmethod
    def _waiting(state: _State, name: str, expected_fingerprint: str | None) -> Pending:
        waiting = state.pending.get(name)
        if waiting is None:
            raise KeyError(f"no pending enrollment for {name}")
        if expected_fingerprint is not None and fingerprint(waiting.public_key) != expected_fingerprint:
            raise EnrollmentRefused("fingerprint_mismatch", "the waiting key is not the one compared: list the "
                                                            "requests again")
        return waiting

    def revoke(self, site: str, device: str) -> None:
        """Unpin a device: from now on nothing it sends is believed (a running controller stops believing it
        within a second), and its key can never be enrolled again."""
        with self._change() as state:
            entry = state.enrolled.pop(_name(site, device), None)
            if entry is None:
                raise KeyError(f"{_name(site, device)} is not enrolled")
            state.revoked[entry.public_key] = {"device": _name(site, device), "at": time.time()}
