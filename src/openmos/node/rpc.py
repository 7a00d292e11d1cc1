"""An asyncio client for Bitcoin Core's JSON-RPC (``getblocktemplate``, ``submitblock``, ...).

Speaks JSON-RPC 1.0 over HTTP POST with Basic auth (``rpcuser``/``rpcpassword`` or the ``.cookie`` file),
as Bitcoin Core and compatible nodes do. One keep-alive connection, reopened on failure; every call has a
timeout and a bounded response size, and a malformed or oversized reply raises ``RpcError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

import orjson

from openmos.node.http import HttpError, basic_auth, read_message

MAX_RESPONSE = 64 << 20  # a full template with 4 MWU of transactions as hex is ~8 MB


class RpcError(Exception):
    """The node answered with an error, or could not be reached or understood."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class NodeRpcClient:
    def __init__(self, host: str = "127.0.0.1", port: int = 8332, user: str = "", password: str = "",
                 timeout: float = 10.0, max_response: int = MAX_RESPONSE) -> None:
        self.host, self.port = host, port
        self.auth = basic_auth(user, password) if user or password else ""
        self.timeout = timeout
        self.max_response = max_response
        self._ids = itertools.count(1)
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, cookie_file: str | None = None, timeout: float = 10.0) -> NodeRpcClient:
        """``http://user:pass@host:port`` (or a cookie file as written by bitcoind)."""
        from urllib.parse import urlsplit

        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"node RPC URL must be http://[user:pass@]host:port, got {url!r}")
        user, password = parts.username or "", parts.password or ""
        if cookie_file:
            user, _, password = Path(cookie_file).read_text().strip().partition(":")
        return cls(parts.hostname, parts.port or 8332, user, password, timeout)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            with contextlib.suppress(Exception):
                await self._conn[1].wait_closed()
            self._conn = None

    async def call(self, method: str, *params: Any) -> Any:
        body = orjson.dumps({"jsonrpc": "1.0", "id": next(self._ids), "method": method, "params": list(params)})
        request = (f"POST / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n" + (f"Authorization: {self.auth}\r\n" if self.auth else "")
                   + "Connection: keep-alive\r\n\r\n").encode() + body
        async with self._lock:
            try:
                raw = await asyncio.wait_for(self._exchange(request), self.timeout)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                    HttpError, ValueError) as exc:
                await self.close()
                raise RpcError(f"{method}: node RPC at {self.host}:{self.port} failed: {exc or type(exc).__name__}"
                               ) from None
        return self._result(method, raw)

    async def _exchange(self, request: bytes) -> tuple[str, bytes]:
        if self._conn is None:
            self._conn = await asyncio.open_connection(self.host, self.port, limit=1 << 16)
        reader, writer = self._conn
        writer.write(request)
        await writer.drain()
        start, headers, body = await read_message(reader, self.max_response)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return start, body

    @staticmethod
    def _result(method: str, raw: tuple[str, bytes]) -> Any:
        start, body = raw
        status = start.split(" ", 2)
        if len(status) < 2 or not status[0].startswith("HTTP/"):
            raise RpcError(f"{method}: not an HTTP response: {start[:80]!r}")
        if status[1] == "401":
            raise RpcError(f"{method}: node RPC refused our credentials (401): check rpcuser/rpcpassword or the "
                           f"cookie file")
        try:
            reply = orjson.loads(body)
        except (ValueError, RecursionError):
            raise RpcError(f"{method}: HTTP {status[1]} with a non-JSON body") from None
        if not isinstance(reply, dict) or ("result" not in reply and "error" not in reply):
            raise RpcError(f"{method}: reply is not a JSON-RPC object")
        error = reply.get("error")
        if error:
            code = error.get("code") if isinstance(error, dict) else None
            text = error.get("message") if isinstance(error, dict) else str(error)
            raise RpcError(f"{method}: {text}", code if isinstance(code, int) else None)
        return reply.get("result")

    # -- the calls a template source needs ---------------------------------------------------------

    async def getblocktemplate(self, longpollid: str | None = None) -> dict[str, Any]:
        request: dict[str, Any] = {"rules": ["segwit"], "capabilities": ["coinbasetxn", "workid", "longpoll"]}
        if longpollid is not None:
            request["longpollid"] = longpollid
        result = await self.call("getblocktemplate", request)
        if not isinstance(result, dict):
            raise RpcError("getblocktemplate: result is not an object")
        return result

    async def submitblock(self, block_hex: str) -> str | None:
        """None when accepted; otherwise the node's reason (``duplicate``, ``inconclusive``, ``high-hash``...)."""
        result = await self.call("submitblock", block_hex)
        if result is not None and not isinstance(result, str):
            raise RpcError("submitblock: result is neither null nor a string")
        return result

    async def getbestblockhash(self) -> str:
        result = await self.call("getbestblockhash")
        if not isinstance(result, str) or len(result) != 64:
            raise RpcError("getbestblockhash: result is not a 64-digit hash")
        return result

    async def getblockcount(self) -> int:
        result = await self.call("getblockcount")
        if not isinstance(result, int) or isinstance(result, bool) or result < 0:
            raise RpcError("getblockcount: result is not a non-negative integer")
        return result

    async def getblockheader(self, block_hash: str) -> dict[str, Any]:
        """The verbose header (``height``, ``previousblockhash``, ``time``, ``mediantime``, ``bits``...)."""
        result = await self.call("getblockheader", block_hash, True)
        if not isinstance(result, dict):
            raise RpcError("getblockheader: result is not an object")
        return result

    async def getblock(self, block_hash: str, verbosity: int = 1) -> Any:
        return await self.call("getblock", block_hash, verbosity)

    async def wait_for_new_tip(self, known: str | None, interval: float = 0.05) -> str:
        """Poll ``getbestblockhash`` until it differs from ``known`` (ZMQ-free); returns the new tip."""
        while True:
            tip = await self.getbestblockhash()
            if tip != known:
                return tip
            await asyncio.sleep(interval)
