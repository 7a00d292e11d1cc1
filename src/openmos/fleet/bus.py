"""The fleet bus: a zenoh session in peer mode (no broker), bridged to asyncio.

Nodes listen on an endpoint and connect to the peers they are told about; multicast scouting is off by
default so nothing leaves the configured links. Zenoh calls back on its own threads; this wrapper hands
every message to the asyncio loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import zenoh


@dataclass(frozen=True)
class BusConfig:
    listen: list[str] = field(default_factory=list)  # e.g. ["tcp/127.0.0.1:7447"]
    connect: list[str] = field(default_factory=list)  # peers or routers
    mode: str = "peer"  # "peer" on a LAN; "client" behind a router between sites
    multicast_scouting: bool = False

    def to_zenoh(self) -> zenoh.Config:
        conf = zenoh.Config()
        conf.insert_json5("mode", json.dumps(self.mode))
        conf.insert_json5("listen/endpoints", json.dumps(self.listen))
        conf.insert_json5("connect/endpoints", json.dumps(self.connect))
        conf.insert_json5("scouting/multicast/enabled", json.dumps(self.multicast_scouting))
        return conf


QueryHandler = Callable[[str, dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]


class FleetBus:
    def __init__(self, config: BusConfig) -> None:
        self.config = config
        self._session: Any = None
        self._declared: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._session = await asyncio.to_thread(zenoh.open, self.config.to_zenoh())

    async def close(self) -> None:
        for obj in self._declared:
            obj.undeclare()
        self._declared.clear()
        if self._session is not None:
            await asyncio.to_thread(self._session.close)
            self._session = None

    @property
    def zid(self) -> str:
        return str(self._session.zid())

    def publish(self, key: str, doc: dict[str, Any]) -> None:
        self._session.put(key, json.dumps(doc).encode())

    def subscribe(self, key: str, callback: Callable[[str, dict[str, Any]], None]) -> None:
        loop = self._loop
        assert loop is not None

        def on_sample(sample: Any) -> None:
            try:
                doc = json.loads(sample.payload.to_bytes())
            except ValueError:
                return  # a malformed message is dropped, never fatal
            loop.call_soon_threadsafe(callback, str(sample.key_expr), doc)

        self._declared.append(self._session.declare_subscriber(key, on_sample))

    def serve(self, key: str, handler: QueryHandler, timeout_s: float = 10.0) -> None:
        """Answer queries on ``key`` with ``handler`` running on the asyncio loop."""
        loop = self._loop
        assert loop is not None

        def on_query(query: Any) -> None:
            payload = query.payload.to_bytes() if query.payload is not None else b"{}"
            try:
                params = json.loads(payload or b"{}")
            except ValueError:
                params = {"_error": "payload is not JSON"}
            coro = handler(str(query.key_expr), params)
            future: concurrent.futures.Future[dict[str, Any]] = asyncio.run_coroutine_threadsafe(coro, loop)
            try:
                result = future.result(timeout_s)
            except Exception as exc:  # the handler's failure becomes the reply, not a crash
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            query.reply(str(query.key_expr), json.dumps(result).encode())

        self._declared.append(self._session.declare_queryable(key, on_query))

    async def query(self, selector: str, params: dict[str, Any] | None = None, timeout_s: float = 3.0
                    ) -> list[tuple[str, dict[str, Any]]]:
        """All replies to ``selector`` (which may match many devices)."""
        payload = json.dumps(params or {}).encode()

        def run() -> list[tuple[str, dict[str, Any]]]:
            out = []
            replies = self._session.get(selector, payload=payload, timeout=timeout_s, target=zenoh.QueryTarget.ALL,
                                        consolidation=zenoh.ConsolidationMode.NONE)
            for reply in replies:
                if reply.ok is not None:
                    try:
                        out.append((str(reply.ok.key_expr), json.loads(reply.ok.payload.to_bytes())))
                    except ValueError:
                        continue
            return out

        return await asyncio.to_thread(run)
