"""``/api/v1/performance``: the tuner's state and curve; set a target; curtail (operator)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException

from openmos.api.deps import Ctx, Operator
from openmos.api.models import CurtailRequest, PerformanceRequest
from openmos.tuning import PerformanceTarget

router = APIRouter(prefix="/api/v1/performance", tags=["performance"])

NO_TUNER = "this hardware has no autotuner (no tunable clocks or no target configured)"


@router.get("")
async def performance(ctx: Ctx) -> dict[str, Any]:
    tuner = ctx.view.agent.tuner
    if tuner is None:
        return {"tuner": None, "curve": []}
    return {"tuner": asdict(tuner.status), "target": str(tuner.base_target),
            "curve": [asdict(p) for p in tuner.efficiency_curve(10)]}


@router.put("")
async def set_performance(body: PerformanceRequest, ctx: Ctx, _: Operator) -> dict[str, Any]:
    agent = ctx.view.agent
    tuner = agent.tuner
    if tuner is None:
        raise HTTPException(409, NO_TUNER)
    limits = agent.hardware.limits()
    if body.step_percent is not None:
        target = tuner.base_target.step(body.step_percent)
    else:
        target = PerformanceTarget.choose(power_w=body.power_w, hashrate_ths=body.hashrate_ths,
                                          profile=body.profile,
                                          nameplate_w=(limits.nameplate_power_w if limits else 0) or 0)
    await tuner.set_target(target)
    return {"target": str(target)}


@router.post("/curtail")
async def curtail(body: CurtailRequest, ctx: Ctx, _: Operator) -> dict[str, Any]:
    tuner = ctx.view.agent.tuner
    if tuner is None:
        raise HTTPException(409, NO_TUNER)
    await tuner.curtail(body.fraction)
    return {"fraction": body.fraction}
