"""The cgminer API wire format (pure): request parsing with size and nesting limits, status rows, codes.

A request is JSON ``{"command": "summary", "parameter": "..."}`` or plain ``cmd|param``; read-only commands
combine with ``+``. Every problem is a :class:`BadRequest` carrying the cgminer status code to answer with,
so a hostile request always gets a clean ``STATUS: E`` reply and never an exception.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from openmos import __version__

MAX_REQUEST_BYTES = 8192
MAX_JSON_DEPTH = 8
API_VERSION = "3.7"

READ_ONLY = ("version", "config", "summary", "pools", "devs", "edevs", "devdetails", "stats", "estats",
             "fans", "temps", "tunerstatus", "coin", "check", "asccount", "power", "profiles", "atm", "session",
             "groups", "tempctrl")
PRIVILEGED = ("addpool", "removepool", "switchpool", "enablepool", "disablepool", "poolpriority", "pause",
              "resume", "restart", "ascset", "logon", "logoff", "curtail", "profileset", "ledset", "resetminer")

# Status codes (cgminer's numbering where it has one).
CODES = {
    "pools": 7, "devs": 9, "summary": 11, "version": 22, "config": 33, "stats": 70, "coin": 78,
    "devdetails": 69, "asccount": 104, "check": 72, "edevs": 9, "estats": 70, "fans": 202, "temps": 201,
    "tunerstatus": 203, "addpool": 55, "removepool": 68, "switchpool": 27, "enablepool": 47,
    "disablepool": 48, "poolpriority": 73, "pause": 204, "resume": 205, "restart": 7, "ascset": 120,
    "power": 206, "profiles": 207, "atm": 208, "session": 209, "logon": 210, "logoff": 211, "curtail": 212,
    "profileset": 213, "groups": 214, "tempctrl": 215, "ledset": 216, "resetminer": 217,
}
INVALID_COMMAND = 14
MISSING_PARAMETER = 15
INVALID_PARAMETER = 16
INVALID_JSON = 23
ACCESS_DENIED = 45
UNSUPPORTED = 121
BUSY = 122
TIMEOUT = 123


@dataclass(frozen=True)
class Request:
    commands: list[str]
    parameter: str | None
    json_style: bool


class BadRequest(ValueError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class JsonScanner:
    """Incremental scan of a JSON text: nesting depth (outside strings) and where the top-level value ends.

    Lets the server frame a request and refuse deep nesting *before* ``json.loads`` recurses into it.
    """

    def __init__(self, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.max_depth = max_depth
        self.depth = 0
        self.deepest = 0
        self.complete = False
        self._started = False
        self._in_string = False
        self._escaped = False

    @property
    def too_deep(self) -> bool:
        return self.deepest > self.max_depth

    def feed(self, data: bytes) -> None:
        for byte in data:
            if self.complete or self.too_deep:
                return
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif byte == 0x5C:  # backslash
                    self._escaped = True
                elif byte == 0x22:  # quote
                    self._in_string = False
            elif byte == 0x22:
                self._in_string = True
            elif byte in (0x7B, 0x5B):  # { [
                self._started = True
                self.depth += 1
                self.deepest = max(self.deepest, self.depth)
            elif byte in (0x7D, 0x5D):  # } ]
                self.depth -= 1
                if self._started and self.depth <= 0:
                    self.complete = True


def parse_request(raw: bytes) -> Request:
    """Decode a request (pure; BadRequest explains what is wrong without echoing it)."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise BadRequest(INVALID_JSON, f"request longer than {MAX_REQUEST_BYTES} bytes")
    text = raw.decode("utf-8", errors="replace").strip().rstrip("\x00").strip()
    if not text:
        raise BadRequest(INVALID_COMMAND, "empty request")
    if text.startswith("{"):
        scan = JsonScanner()
        scan.feed(text.encode())
        if scan.too_deep:
            raise BadRequest(INVALID_JSON, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise BadRequest(INVALID_JSON, "invalid JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("command"), str):
            raise BadRequest(INVALID_JSON, 'JSON request needs a "command" string')
        param = obj.get("parameter")
        if (param is not None and not isinstance(param, str | int | float)) or isinstance(param, bool):
            raise BadRequest(INVALID_PARAMETER, "parameter must be a string or a number")
        command, parameter, json_style = obj["command"], None if param is None else str(param), True
    else:
        command, _, rest = text.partition("|")
        parameter, json_style = (rest if rest else None), False
    commands = [c.strip().lower() for c in command.split("+")]
    if len(commands) > 16:
        raise BadRequest(INVALID_COMMAND, "at most 16 commands can be combined with +")
    if not all(c and c.isascii() and c.replace("_", "").isalnum() and len(c) <= 32 for c in commands):
        raise BadRequest(INVALID_COMMAND, "invalid command name")
    if len(commands) > 1 and any(c in PRIVILEGED for c in commands):
        raise BadRequest(INVALID_COMMAND, "privileged commands cannot be combined with +")
    return Request(commands, parameter, json_style)


def status(kind: str, code: int, msg: str) -> list[dict[str, Any]]:
    return [{"STATUS": kind, "When": int(time.time()), "Code": code, "Msg": msg,
             "Description": f"OpenMOS {__version__}"}]


def error_reply(code: int, msg: str) -> dict[str, Any]:
    return {"STATUS": status("E", code, msg), "id": 1}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def encode_reply(reply: dict[str, Any]) -> bytes:
    """A reply on the wire: strict JSON (a NaN sensor reading becomes null), then the NUL byte cgminer clients
    read up to."""
    try:
        text = json.dumps(reply, allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(_finite(reply), allow_nan=False, default=str)
    return text.encode() + b"\x00"


async def answer(raw: bytes, one: Callable[[str, str | None], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Parse ``raw`` and answer it with ``one(command, parameter)``: one command's reply as it is, joined
    commands (``summary+pools``) as ``{command: [reply], ..., "id": 1}``; a bad request is an error reply."""
    try:
        req = parse_request(raw)
    except BadRequest as exc:
        return error_reply(exc.code, str(exc))
    if len(req.commands) == 1:
        return await one(req.commands[0], req.parameter)
    combined: dict[str, Any] = {}
    for command in req.commands:
        combined[command] = [await one(command, req.parameter)]
    combined["id"] = 1
    return combined
