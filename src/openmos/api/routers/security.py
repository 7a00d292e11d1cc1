"""``/api/v1/security``: the last integrity scan and pool-tamper events; run the checks now (operator)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException

from openmos.api.deps import Ctx, Operator
from openmos.miner.agent import MiningAgent

router = APIRouter(prefix="/api/v1/security", tags=["security"])


def scan_doc(agent: MiningAgent) -> dict[str, Any]:
    report = agent.last_scan
    return {"configured": bool(agent.config.security.scan_root),
            "last_scan": None if report is None else {
                "root": report.root, "started": report.started, "files_hashed": report.files_hashed,
                "worst": report.worst(), "findings": [asdict(f) for f in report.findings]},
            "events": list(agent.security_events)}


@router.get("")
async def security(ctx: Ctx) -> dict[str, Any]:
    return scan_doc(ctx.view.agent)


@router.post("/scan")
async def security_scan(ctx: Ctx, _: Operator) -> dict[str, Any]:
    agent = ctx.view.agent
    if not agent.config.security.scan_root and not agent.config.security.desired_pools:
        raise HTTPException(409, "no scan configured (security.scan_root / security.desired_pools)")
    await agent.run_security_checks()
    return scan_doc(agent)
