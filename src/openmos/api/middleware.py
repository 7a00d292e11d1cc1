"""The REST API's front door (pure ASGI, runs before routing and before any body is read).

In order: the ``Host`` header must name this device (DNS rebinding: a hostile page whose name resolves to
the device gets 421); a declared body larger than the limit is refused with 413 and a streamed one is cut
at the limit; writes (POST/PUT/PATCH/DELETE outside ``/api/v1/auth/``) need a valid bearer token before
their body is parsed. Every reply gets a CSP, frame and sniffing protection, and API replies ``no-store``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmos.api.auth import AuthStore
from openmos.api.deps import authenticate

MAX_BODY_BYTES = 64 * 1024
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_WRITES = ("/api/v1/auth/",)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin")]


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


@dataclass(frozen=True)
class HostAllowList:
    """Host names the API answers to. IP literals always pass (a rebinding attack needs a name)."""

    names: frozenset[str]

    @classmethod
    def default(cls, extra: list[str] | tuple[str, ...] = ()) -> HostAllowList:
        hostname = socket.gethostname().lower()
        names = {"localhost", "localhost.localdomain", hostname, f"{hostname}.local"}
        return cls(frozenset(names | {n.strip().lower().removesuffix(".") for n in extra if n.strip()}))

    def permits(self, host_header: str) -> bool:
        host = host_header.strip().lower()
        if host.startswith("["):  # [v6]:port
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        host = host.removesuffix(".")
        if not host:
            return False
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return host in self.names


class RequestGuard:
    def __init__(self, app: ASGIApp, *, auth: Callable[[], AuthStore], hosts: HostAllowList,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.auth, self.hosts, self.max_body = app, auth, hosts, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope.get("path", "")
        no_store = path.startswith("/api/") or "authorization" in headers

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                if no_store:
                    extra.append((b"cache-control", b"no-store"))
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in extra if h[0] not in present)]}
            await send(message)

        refusal = self._refusal(scope, headers, path)
        if refusal is not None:
            status, detail, extra_headers = refusal
            await _reply(send_secured, status, detail, extra_headers)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        await self.app(scope, limited_receive, send_secured)

    def _refusal(self, scope: Scope, headers: Headers, path: str) -> tuple[int, str, dict[str, str]] | None:
        if not self.hosts.permits(headers.get("host", "")):
            return 421, "unknown Host: use the device's address or a name listed in api.allowed_hosts", {}
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, f"request body larger than {self.max_body} bytes", {"connection": "close"}
        if scope.get("method") in WRITES and not path.startswith(OPEN_WRITES):
            try:
                authenticate(self.auth(), headers.get("authorization"))
            except HTTPException as exc:
                return exc.status_code, str(exc.detail), dict(exc.headers or {})
        return None


async def _reply(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
