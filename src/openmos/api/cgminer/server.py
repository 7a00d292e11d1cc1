"""The cgminer API's TCP server: framing, limits and deadlines; commands are answered by a responder.

One request per connection, the reply ends with a NUL byte, then the server closes (what cgminer does and
what pyasic expects). A hostile client is bounded: a request larger than ``MAX_REQUEST_BYTES`` or nested
deeper than ``MAX_JSON_DEPTH`` is answered with an error at once, the whole exchange has one deadline (a
client dribbling a byte every 0.2 s is cut), and connections beyond ``max_connections`` are answered "busy"
without being read. One address may hold at most ``max_per_peer`` of them (more are closed unanswered), so a
host keeping connections open cannot lock out the fleet poller or pyasic of another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from openmos.api.cgminer.protocol import (
    BUSY,
    INVALID_COMMAND,
    INVALID_JSON,
    MAX_JSON_DEPTH,
    MAX_REQUEST_BYTES,
    TIMEOUT,
    JsonScanner,
    encode_reply,
    error_reply,
)
from openmos.base.server import StreamServer

log = logging.getLogger(__name__)

REQUEST_DEADLINE_S = 5.0
WRITE_DEADLINE_S = 10.0
MAX_CONNECTIONS = 64
MAX_CONNECTIONS_PER_PEER = 16
LINGER_S = 0.5


class Responder(Protocol):
    async def respond(self, raw: bytes, peer: str) -> dict[str, Any]: ...


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request: a JSON object up to its closing brace, or a plain ``cmd|param`` line. Raises
    _Refused for oversize or over-nested input (the caller applies the deadline)."""
    data = b""
    scan = JsonScanner()
    while True:
        chunk = await reader.read(4096)
        if not chunk:
            return data
        if not data.strip():
            chunk_start = (data + chunk).lstrip()
            if chunk_start and not chunk_start.startswith(b"{"):
                data += chunk
                if len(data) > MAX_REQUEST_BYTES:
                    raise _Refused(INVALID_JSON, f"request longer than {MAX_REQUEST_BYTES} bytes")
                return data  # plain cmd|param arrives in one write
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise _Refused(INVALID_JSON, f"request longer than {MAX_REQUEST_BYTES} bytes")
        scan.feed(chunk)
        if scan.too_deep:
            raise _Refused(INVALID_JSON, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if scan.complete:
            return data


class CgminerServer:
    """asyncio TCP server speaking the cgminer wire format in front of a responder (:class:`CgminerApi`, or
    a simulated device)."""

    def __init__(self, api: Responder, host: str = "127.0.0.1", port: int = 4028, *,
                 deadline_s: float = REQUEST_DEADLINE_S, max_connections: int = MAX_CONNECTIONS,
                 max_per_peer: int = MAX_CONNECTIONS_PER_PEER) -> None:
        self.api = api
        self.host = host
        self.port = port
        self.deadline_s = deadline_s
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.active = 0
        self._per_peer: dict[str, int] = {}  # open connections by peer address (entries removed at 0)
        self.refused_busy = 0
        self.timed_out = 0
        self._listener = StreamServer(self._handle)  # its own limits below: a busy reply, then none

    async def start(self) -> None:
        self.port = await self._listener.start(self.host, self.port, reuse_address=True)
        allow = getattr(self.api, "allow", None)
        networks = ", ".join(str(n) for n in allow.networks) if allow is not None else ""
        log.debug("cgminer API on %s:%d (privileged for %s)", self.host, self.port, networks or "nobody")

    async def stop(self) -> None:
        await self._listener.stop()

    async def _answer(self, reader: asyncio.StreamReader, peer: str) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.deadline_s):
                raw = await read_request(reader)
        except _Refused as exc:
            return error_reply(exc.code, str(exc))
        except TimeoutError:
            self.timed_out += 1
            return error_reply(TIMEOUT, f"request not complete within {self.deadline_s:g} s")
        try:
            return await self.api.respond(raw, peer)
        except Exception:  # a bug must not take the API down: answer with an error STATUS
            log.exception("cgminer api: internal error on a %d-byte request from %s", len(raw), peer)
            return error_reply(INVALID_COMMAND, "internal error")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str((writer.get_extra_info("peername") or ("?",))[0])
        held = self._per_peer.get(peer, 0)
        # A flood, or one host holding its share: not even a reply (and not counted against other hosts).
        if self.active >= 2 * self.max_connections or held >= self.max_per_peer:
            self.refused_busy += 1
            writer.transport.abort()
            return
        busy = self.active >= self.max_connections
        self.active += 1
        self._per_peer[peer] = held + 1
        try:
            if busy:
                self.refused_busy += 1
                reply = error_reply(BUSY, f"too many connections (limit {self.max_connections}); retry later")
            else:
                reply = await self._answer(reader, peer)
            writer.write(encode_reply(reply))
            async with asyncio.timeout(WRITE_DEADLINE_S):
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            # Swallow what the client still sends (briefly) so closing does not reset the reply away.
            async with asyncio.timeout(LINGER_S):
                while await reader.read(4096):
                    pass
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            self.active -= 1
            left = self._per_peer.pop(peer, 1) - 1
            if left:
                self._per_peer[peer] = left
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()
