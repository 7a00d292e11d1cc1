"""What REST routes depend on: the device context, the caller's session and its role.

Tokens travel as ``Authorization: Bearer <token>`` and only so (a bare token is refused). Writes are also
gated before their body is read (:mod:`openmos.api.middleware`); these dependencies then check the role and
write the audit line.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request
from prometheus_client.registry import CollectorRegistry

from openmos.api.auth import AuthError, AuthStore, Role, Session
from openmos.api.logs import LogBuffer
from openmos.api.view import DeviceView

log = logging.getLogger("openmos.api.rest")

_BEARER = re.compile(r"^Bearer ([A-Za-z0-9._~+/-]+=*)$", re.IGNORECASE)


@dataclass
class ApiContext:
    """Everything the routes of one device API share (kept on ``app.state.ctx``)."""

    view: DeviceView
    auth: AuthStore
    registry: CollectorRegistry
    config_path: Path | None = None
    logs: LogBuffer | None = None
    max_streams: int = 8
    streams: int = 0
    audit: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for anything else."""
    if not authorization:
        return None
    match = _BEARER.match(authorization.strip())
    return match.group(1) if match else None


def authenticate(auth: AuthStore, authorization: str | None) -> Session:
    """The session behind the header: 403 before the owner exists, 401 without a valid bearer token."""
    if not auth.has_owner:
        raise HTTPException(403, "no owner account yet: create one with POST /api/v1/auth/setup")
    token = bearer_token(authorization)
    if token is None:
        raise HTTPException(401, "send the token as 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    try:
        return auth.check(token)
    except AuthError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


def session(request: Request, authorization: Annotated[str | None, Header()] = None) -> Session:
    """The caller's session (401 without one, 403 before the owner exists)."""
    return authenticate(request.app.state.auth, authorization)


def _audited(s: Session, request: Request) -> Session:
    request.app.state.audit.append({"time": time.time(), "user": s.user, "method": request.method,
                                    "path": request.url.path})
    log.info("audit: %s %s by %s", request.method, request.url.path, s.user)
    return s


def operator(s: Annotated[Session, Depends(session)], request: Request) -> Session:
    """A session allowed to change the device; every such call goes to the audit log."""
    if not s.role.allows(Role.OPERATOR):
        raise HTTPException(403, f"role {s.role.value} may not change the device")
    return _audited(s, request)


def admin(s: Annotated[Session, Depends(session)], request: Request) -> Session:
    """A session allowed to change accounts, auth settings and allow lists."""
    if not s.role.allows(Role.ADMIN):
        raise HTTPException(403, f"role {s.role.value} may not change accounts or access settings")
    return _audited(s, request)


Operator = Annotated[Session, Depends(operator)]
Admin = Annotated[Session, Depends(admin)]
AnySession = Annotated[Session, Depends(session)]
