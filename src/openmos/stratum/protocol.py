"""Stratum V1 JSON-RPC framing: one JSON object per newline-terminated line.

Everything read from the network goes through :func:`parse_message`, which either returns a typed message
or raises :class:`ProtocolError` with a message that says what was wrong -- callers log it and decide
whether to drop the connection; nothing here ever crashes on bad bytes.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

# Real Stratum lines are < 2 KiB (a notify with a 12-level merkle branch is ~1 KiB). Cap generously.
MAX_LINE_BYTES = 64 * 1024

JsonId = int | str | None


class ProtocolError(ValueError):
    """A peer sent something that is not valid Stratum V1."""


class StratumErrorCode(IntEnum):
    """Conventional Stratum V1 error codes (as used by cgminer, ckpool and most pools)."""

    OTHER = 20
    JOB_NOT_FOUND = 21  # stale
    DUPLICATE_SHARE = 22
    LOW_DIFFICULTY = 23
    UNAUTHORIZED = 24
    NOT_SUBSCRIBED = 25


@dataclass(frozen=True)
class Request:
    """A call that expects a response (``id`` is not null)."""

    id: int | str
    method: str
    params: list[Any]


@dataclass(frozen=True)
class Notification:
    """A call without an id (mining.notify, mining.set_difficulty, ...)."""

    method: str
    params: list[Any]


@dataclass(frozen=True)
class Response:
    id: JsonId
    result: Any
    error: Any

    @property
    def ok(self) -> bool:
        return self.error is None

    def error_text(self) -> str:
        """Human-readable reason from any of the error shapes pools use: [code, msg, tb], {code, message}, str."""
        err = self.error
        if err is None:
            return "" if self.result else "rejected without a reason"
        if isinstance(err, list) and len(err) >= 2:
            return f"{err[1]} (code {err[0]})"
        if isinstance(err, dict):
            return f"{err.get('message', err)} (code {err.get('code', '?')})"
        return str(err)

    def error_code(self) -> int | None:
        err = self.error
        if isinstance(err, list) and err and isinstance(err[0], int):
            return err[0]
        if isinstance(err, dict) and isinstance(err.get("code"), int):
            return int(err["code"])
        return None


Message = Request | Notification | Response


def parse_message(line: bytes | str) -> Message:
    """Decode one line into a typed message, or raise :class:`ProtocolError` saying why not."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError(f"line of {len(line)} bytes exceeds the {MAX_LINE_BYTES}-byte cap")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"line is not UTF-8: {exc}") from None
    line = line.strip()
    if not line:
        raise ProtocolError("empty line")
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"malformed JSON: {str(exc)[:120]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a JSON object, got {type(obj).__name__}")
    msg_id = obj.get("id")
    if msg_id is not None and (isinstance(msg_id, bool) or not isinstance(msg_id, int | str)):
        raise ProtocolError(f"id must be an integer, string or null, got {type(msg_id).__name__}")
    if "method" in obj:
        method = obj["method"]
        if not isinstance(method, str) or not method:
            raise ProtocolError("method must be a non-empty string")
        params = obj.get("params", [])
        if params is None:
            params = []
        if not isinstance(params, list):
            raise ProtocolError(f"params must be a JSON array, got {type(params).__name__}")
        if msg_id is None:
            return Notification(method, params)
        return Request(msg_id, method, params)
    if "result" in obj or "error" in obj:
        return Response(msg_id, obj.get("result"), obj.get("error"))
    raise ProtocolError("message has neither a method nor a result/error")


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def encode_request(msg_id: int | str, method: str, params: list[Any]) -> bytes:
    return encode({"id": msg_id, "method": method, "params": params})


def encode_notification(method: str, params: list[Any]) -> bytes:
    return encode({"id": None, "method": method, "params": params})


def encode_response(msg_id: JsonId, result: Any = None, error: Any = None) -> bytes:
    return encode({"id": msg_id, "result": result, "error": error})


def error_triple(code: StratumErrorCode, message: str) -> list[Any]:
    return [int(code), message, None]


async def read_line(reader: asyncio.StreamReader) -> bytes | None:
    """Next line, ``None`` at EOF. Raises ProtocolError for a line over the reader's limit.

    The stream must be opened with ``limit=MAX_LINE_BYTES`` (or a chosen cap): asyncio then refuses to
    buffer more than that without a newline, which bounds memory per connection.
    """
    try:
        line = await reader.readline()
    except (asyncio.LimitOverrunError, ValueError) as exc:
        raise ProtocolError(f"line exceeds the length cap ({exc})") from None
    if not line:
        return None
    if not line.endswith(b"\n"):
        return None  # connection closed mid-line: treat the fragment as EOF
    return line


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def hex_field(value: Any, name: str, *, size: int | None = None, max_size: int = 1 << 16) -> bytes:
    """Validate a hex-string parameter and return its bytes."""
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a hex string, got {type(value).__name__}")
    if len(value) > 2 * max_size:
        raise ProtocolError(f"{name} is too long ({len(value) // 2} bytes)")
    # Errors name the field and the position, never the text: replies and logs must not echo a peer's input.
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if 2 * len(raw) != len(value):  # bytes.fromhex skips whitespace: "0011 2233" is not a hex field either
        bad = next((i for i, ch in enumerate(value) if ch not in _HEX_DIGITS), None)
        if bad is not None:
            raise ProtocolError(f"{name} is not valid hex (character {bad + 1} of {len(value)})")
        raise ProtocolError(f"{name} is not valid hex (odd number of digits: {len(value)})")
    if size is not None and len(raw) != size:
        raise ProtocolError(f"{name} must be {size} bytes, got {len(raw)}")
    return raw


def u32_field(value: Any, name: str) -> int:
    """A 32-bit field sent as 8 hex digits (big-endian), e.g. version, nbits, ntime, nonce."""
    raw = hex_field(value, name, size=4)
    return int.from_bytes(raw, "big")
