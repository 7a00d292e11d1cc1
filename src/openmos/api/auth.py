"""Accounts and tokens for the REST API: no default password, an owner is created at first start.

Passwords are stored as scrypt hashes (stdlib). Roles: ``admin`` (everything, accounts), ``operator``
(mining controls, pools, performance), ``readonly`` (reads only; reads are also open without a token).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from openmos.base.files import atomic_write

TOKEN_TTL_S = 12 * 3600
MIN_PASSWORD = 10


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    READONLY = "readonly"

    def allows(self, needed: Role) -> bool:
        order = [Role.READONLY, Role.OPERATOR, Role.ADMIN]
        return order.index(self) >= order.index(needed)


class AuthError(Exception):
    pass


@dataclass(frozen=True)
class Session:
    user: str
    role: Role
    expires: float


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


class AuthStore:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._users: dict[str, dict[str, str]] = {}
        self._tokens: dict[str, Session] = {}
        if path is not None and path.exists():
            self._users = json.loads(path.read_text())["users"]

    @property
    def has_owner(self) -> bool:
        return any(u["role"] == Role.ADMIN for u in self._users.values())

    def _save(self) -> None:
        if self.path is not None:
            atomic_write(self.path, json.dumps({"users": self._users}).encode())
            self.path.chmod(0o600)

    def add_user(self, user: str, password: str, role: Role) -> None:
        if len(password) < MIN_PASSWORD:
            raise AuthError(f"password must have at least {MIN_PASSWORD} characters")
        if user in self._users:
            raise AuthError(f"user {user!r} exists")
        salt = secrets.token_bytes(16)
        self._users[user] = {"salt": salt.hex(), "hash": _hash(password, salt).hex(), "role": role.value}
        self._save()

    def setup_owner(self, user: str, password: str) -> None:
        """First start only: create the admin. Refused once an owner exists."""
        if self.has_owner:
            raise AuthError("the owner account already exists")
        self.add_user(user, password, Role.ADMIN)

    def login(self, user: str, password: str) -> str:
        record = self._users.get(user)
        # Hash even for unknown users so timing does not reveal which names exist.
        salt = bytes.fromhex(record["salt"]) if record else b"\x00" * 16
        digest = _hash(password, salt)
        if record is None or not hmac.compare_digest(digest.hex(), record["hash"]):
            raise AuthError("wrong user or password")
        token = secrets.token_urlsafe(32)
        self._tokens[token] = Session(user, Role(record["role"]), time.time() + TOKEN_TTL_S)
        return token

    def check(self, token: str | None) -> Session:
        session = self._tokens.get(token or "")
        if session is None or session.expires < time.time():
            self._tokens.pop(token or "", None)
            raise AuthError("missing, unknown or expired token")
        return session
