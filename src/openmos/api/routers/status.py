"""Reads: status, live stream (SSE), hashboards, cooling, Prometheus metrics, logs and the audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from openmos.api.deps import AnySession, Ctx, Operator
from openmos.api.models import CoolingRequest
from openmos.api.view import DeviceStatus
from openmos.control import SetCooling, to_wire

router = APIRouter()


@router.get("/api/v1/status", tags=["status"])
async def get_status(ctx: Ctx) -> DeviceStatus:
    return ctx.view.status()


@router.get("/api/v1/stream", tags=["status"])
async def stream(ctx: Ctx, interval: Annotated[float, Query(ge=0.2, le=60)] = 1.0) -> StreamingResponse:
    """Server-Sent Events: one ``status`` event per interval. At most ``max_streams`` at once (503 beyond)."""
    if ctx.streams >= ctx.max_streams:
        raise HTTPException(503, f"at most {ctx.max_streams} live streams at once; retry later",
                            headers={"Retry-After": "5"})
    ctx.streams += 1

    async def events() -> AsyncIterator[str]:
        try:
            while True:
                yield f"event: status\ndata: {ctx.view.status().to_json()}\n\n"
                await asyncio.sleep(interval)
        finally:
            ctx.streams -= 1

    return StreamingResponse(events(), media_type="text/event-stream")


@router.get("/api/v1/hashboards", tags=["hashboards"])
async def hashboards(ctx: Ctx) -> list[dict[str, Any]]:
    return [{k: v for k, v in asdict(b).items() if k != "chips"} | {"chips": len(b.chips),
            "hardware_errors": b.hardware_errors} for b in ctx.view.boards()]


@router.get("/api/v1/hashboards/{board}/chips", tags=["hashboards"])
async def chips(board: int, ctx: Ctx) -> list[dict[str, Any]]:
    boards = ctx.view.boards()
    if not 0 <= board < len(boards):
        raise HTTPException(404, "no such hashboard")
    return [asdict(c) for c in boards[board].chips]


@router.get("/api/v1/cooling", tags=["cooling"])
async def cooling(ctx: Ctx) -> dict[str, Any]:
    tuner = ctx.view.agent.tuner
    return {"fans": [{"index": i, "rpm": rpm, "duty_pct": duty} for i, rpm, duty in ctx.view.fans()],
            "mode": tuner.cooling.mode.value if tuner else None,
            "limits": asdict(tuner.cooling.limits) if tuner else None,
            "dps_steps": tuner.guard.dps_steps if tuner else 0}


@router.put("/api/v1/cooling", tags=["cooling"])
async def set_cooling(body: CoolingRequest, ctx: Ctx, _: Operator) -> dict[str, Any]:
    """Fan mode (and duty for ``manual``) while no autotuner drives the fans."""
    return to_wire(await ctx.view.control.execute(SetCooling(body.mode, body.duty_pct)))


@router.get("/metrics", tags=["metrics"], response_class=PlainTextResponse)
async def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/logs", tags=["logs"])
async def get_logs(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
    return list(ctx.logs.lines)[-limit:] if ctx.logs else []


@router.get("/api/v1/audit", tags=["logs"])
async def get_audit(ctx: Ctx, _: AnySession) -> list[dict[str, Any]]:
    return list(ctx.audit)
