"""Minimal HTTP/1.1 for JSON-RPC over loopback: one request per connection read with hard limits.

Both sides treat the peer as hostile: header lines and count are capped, the body must have a
Content-Length no larger than the configured maximum, and every read is under a timeout.
"""

from __future__ import annotations

import asyncio
import base64

MAX_HEADER_LINE = 8192
MAX_HEADERS = 64


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


async def read_message(reader: asyncio.StreamReader, max_body: int) -> tuple[str, dict[str, str], bytes]:
    """(start line, lower-cased headers, body) of one HTTP message; HttpError if it breaks a limit."""
    start, headers, length = await read_head(reader, max_body)
    return start, headers, await reader.readexactly(length)


async def read_head(reader: asyncio.StreamReader, max_body: int) -> tuple[str, dict[str, str], int]:
    """(start line, lower-cased headers, body length) of one HTTP message, the body not read yet (a server
    checks who is asking before it buffers a large body); HttpError if it breaks a limit."""
    start = await reader.readuntil(b"\n")
    if len(start) > MAX_HEADER_LINE:
        raise HttpError(431, "start line too long")
    headers: dict[str, str] = {}
    while True:
        line = await reader.readuntil(b"\n")
        if len(line) > MAX_HEADER_LINE:
            raise HttpError(431, "header line too long")
        if line in (b"\r\n", b"\n"):
            break
        if len(headers) >= MAX_HEADERS:
            raise HttpError(431, "too many headers")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise HttpError(400, "malformed header")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise HttpError(411, "chunked bodies are not accepted; send Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "bad Content-Length") from None
    if length < 0:
        raise HttpError(400, "bad Content-Length")
    if length > max_body:  # the number is not repeated back: it is the peer's input, up to a header line long
        raise HttpError(413, f"body larger than {max_body} bytes")
    return start.decode("latin-1").strip(), headers, length


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def response(status: int, reason: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: keep-alive\r\n\r\n").encode() + body
