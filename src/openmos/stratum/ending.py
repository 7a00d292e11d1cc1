"""How a pool session ends, whatever its protocol (``StratumClient`` V1, ``Sv2Client`` V2)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from openmos.base.tasks import cancel_and_wait


class EndingSession:
    """``close(reason)``: the first reason is kept in ``close_reason``, ``closed`` is set, the owner's ``on_close``
    is told, requests still waiting for an answer fail with ``ConnectionError``, the transport is closed
    (``_close_transport``, per protocol) and the reader task stops. Later calls do nothing."""

    url: Any
    closed: asyncio.Event
    close_reason: str
    _on_close: Callable[[Any, str], None] | None
    _pending: dict[Any, asyncio.Future[Any]]
    _read_task: asyncio.Task[None] | None

    async def _close_transport(self) -> None:
        raise NotImplementedError

    async def close(self, reason: str = "closed by agent") -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        if self._on_close:
            self._on_close(self, reason)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection closed: {reason}"))
        self._pending.clear()
        await self._close_transport()
        await cancel_and_wait(self._read_task)
        logging.getLogger(type(self).__module__).info("%s: disconnected (%s)", self.url, reason)
