"""Accounts and tokens for the REST API: no default password, an owner is created at first start.

Passwords are stored as scrypt hashes (stdlib) in a JSON file that the device APIs keep in the agent's state
directory by default, so the owner survives restarts and ``/auth/setup`` cannot be replayed. Roles:
``admin`` (everything: accounts, auth settings, allow lists), ``operator`` (mining controls, pools,
performance), ``readonly`` (reads only; reads are also open without a token).

Password checks are expensive on purpose; the async entry points run them in worker threads (at most
``HASH_SLOTS`` at once) behind :class:`LoginThrottle`, so guessing is slow and never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from openmos.base.files import atomic_write

TOKEN_TTL_S = 12 * 3600
MIN_PASSWORD = 10
HASH_SLOTS = 1  # one core at most for password hashing: the device keeps the rest for mining and APIs
T = TypeVar("T")
MAX_HASH_QUEUE = 16


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    READONLY = "readonly"

    def allows(self, needed: Role) -> bool:
        order = [Role.READONLY, Role.OPERATOR, Role.ADMIN]
        return order.index(self) >= order.index(needed)


class AuthError(Exception):
    pass


class TooManyAttempts(AuthError):
    """Login refused without checking the password: retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Session:
    user: str
    role: Role
    expires: float


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


@dataclass
class _Strikes:
    failures: int = 0
    blocked_until: float = 0.0


class LoginThrottle:
    """Failed logins per account and per client address. After ``free`` failures each further one doubles
    the wait (``base_s``, 2x, 4x ... up to ``max_s``); a success clears the account and the client. Memory is
    bounded: at most ``max_entries`` keys, the least recently failed forgotten first."""

    def __init__(self, free: int = 5, base_s: float = 1.0, max_s: float = 900.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.base_s, self.max_s, self.max_entries = free, base_s, max_s, max_entries
        self._now = clock
        self._keys: OrderedDict[str, _Strikes] = OrderedDict()

    @staticmethod
    def keys(user: str, client: str) -> tuple[str, str]:
        return f"user:{user[:64]}", f"client:{client[:64]}"

    def retry_after(self, user: str, client: str) -> float:
        now = self._now()
        waits = [s.blocked_until - now for k in self.keys(user, client) if (s := self._keys.get(k))]
        return max([0.0, *waits])

    def failed(self, user: str, client: str) -> None:
        now = self._now()
        for key in self.keys(user, client):
            strikes = self._keys.pop(key, None) or _Strikes()
            strikes.failures += 1
            if strikes.failures > self.free:
                delay = min(self.base_s * 2 ** min(strikes.failures - self.free - 1, 30), self.max_s)
                strikes.blocked_until = now + delay
            self._keys[key] = strikes
        while len(self._keys) > self.max_entries:
            self._keys.popitem(last=False)

    def succeeded(self, user: str, client: str) -> None:
        for key in self.keys(user, client):
            self._keys.pop(key, None)


class AuthStore:
    """Accounts (persisted at ``path`` when given) and live tokens (memory only)."""

    def __init__(self, path: Path | None, throttle: LoginThrottle | None = None) -> None:
        self.path = path
        self.throttle = throttle or LoginThrottle()
        self._users: dict[str, dict[str, str]] = {}
        self._tokens: dict[str, Session] = {}
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._queued = 0
        if path is not None and path.exists():
            try:
                self._users = json.loads(path.read_text())["users"]
            except (ValueError, KeyError, TypeError) as exc:
                raise AuthError(f"accounts file {path} is unreadable ({type(exc).__name__}); restore it from a "
                                "backup or move it away to set up the owner again") from None

    @property
    def has_owner(self) -> bool:
        return any(u.get("role") == Role.ADMIN for u in self._users.values())

    def _save(self) -> None:
        if self.path is not None:
            atomic_write(self.path, json.dumps({"users": self._users}).encode())
            self.path.chmod(0o600)

    @staticmethod
    def _record(password: str, role: Role) -> dict[str, str]:
        if len(password) < MIN_PASSWORD:
            raise AuthError(f"password must have at least {MIN_PASSWORD} characters")
        salt = secrets.token_bytes(16)
        return {"salt": salt.hex(), "hash": _hash(password, salt).hex(), "role": role.value}

    def _insert(self, user: str, record: dict[str, str], *, owner: bool = False) -> None:
        if owner and self.has_owner:
            raise AuthError("the owner account already exists")
        if user in self._users:
            raise AuthError("that user exists")
        self._users[user] = record
        self._save()

    def add_user(self, user: str, password: str, role: Role) -> None:
        if user in self._users:
            raise AuthError("that user exists")
        self._insert(user, self._record(password, role))

    def setup_owner(self, user: str, password: str) -> None:
        """First start only: create the admin. Refused once an owner exists."""
        if self.has_owner:
            raise AuthError("the owner account already exists")
        self._insert(user, self._record(password, Role.ADMIN), owner=True)

    def _verify(self, user: str, password: str) -> bool:
        record = self._users.get(user)
        # Hash even for unknown users so timing does not reveal which names exist.
        salt = bytes.fromhex(record["salt"]) if record else b"\x00" * 16
        digest = _hash(password, salt)
        return record is not None and hmac.compare_digest(digest.hex(), record["hash"])

    def _issue(self, user: str) -> str:
        token = secrets.token_urlsafe(32)
        now = time.time()
        self._tokens = {t: s for t, s in self._tokens.items() if s.expires > now}
        self._tokens[token] = Session(user, Role(self._users[user]["role"]), now + TOKEN_TTL_S)
        return token

    def login(self, user: str, password: str) -> str:
        """Synchronous login (CLI and tests); network callers use :meth:`login_async`."""
        if not self._verify(user, password):
            raise AuthError("wrong user or password")
        return self._issue(user)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(HASH_SLOTS))
        return self._slots[1]

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a hash in a worker thread, at most HASH_SLOTS at once; a long queue is refused, not grown."""
        if self._queued >= MAX_HASH_QUEUE:
            raise TooManyAttempts(1.0)
        self._queued += 1
        try:
            async with self._semaphore():
                return await asyncio.to_thread(fn, *args)
        finally:
            self._queued -= 1

    async def login_async(self, user: str, password: str, client: str) -> str:
        """Login with the per-account and per-client backoff; the hash runs in a worker thread."""
        wait = self.throttle.retry_after(user, client)
        if wait > 0:
            raise TooManyAttempts(wait)
        if not await self._in_thread(self._verify, user, password):
            self.throttle.failed(user, client)
            raise AuthError("wrong user or password")
        self.throttle.succeeded(user, client)
        return self._issue(user)

    async def setup_owner_async(self, user: str, password: str) -> None:
        if self.has_owner:
            raise AuthError("the owner account already exists")
        record = await self._in_thread(self._record, password, Role.ADMIN)
        self._insert(user, record, owner=True)

    def check(self, token: str | None) -> Session:
        session = self._tokens.get(token or "")
        if session is None or session.expires < time.time():
            self._tokens.pop(token or "", None)
            raise AuthError("missing, unknown or expired token")
        return session
