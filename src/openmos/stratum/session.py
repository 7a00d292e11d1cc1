"""What the pool manager and the agent need from one pool session, whatever its protocol.

``StratumClient`` (V1) and ``Sv2Client`` (V2, standard channel) both satisfy ``PoolSession``; the agent
turns ``last_job`` / ``on_job`` jobs into headers with ``job.header(extranonce1, extranonce2, ...)`` and
submits ``Share`` objects, so it never needs to know which protocol is underneath.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from openmos.stratum.client import ShareCounters, SubmitResult
from openmos.stratum.job import Share, StratumJob


class PoolSession(Protocol):
    extranonce1: bytes
    extranonce2_size: int
    difficulty: float
    version_mask: int
    session_id: str | None
    authorized: bool
    counters: ShareCounters
    closed: asyncio.Event
    close_reason: str
    last_job: StratumJob | None
    last_receive: float
    reconnect_target: tuple[str, int] | None
    # health, for failover on quality: valid jobs so far, when the connection was made (monotonic; 0 before),
    # and whether the session was closed because the pool sent garbage
    jobs_received: int
    connected_at: float
    failed_quality: bool

    @property
    def bad_lines(self) -> int:
        """Messages from the pool that were refused (malformed, out of range, out of place)."""
        ...

    @property
    def unanswered_since(self) -> float | None:
        """When the oldest submit still waiting for its answer was sent (monotonic), None if none waits."""
        ...

    async def connect(self) -> None: ...

    async def close(self, reason: str = ...) -> None: ...

    async def submit(self, share: Share) -> SubmitResult: ...
