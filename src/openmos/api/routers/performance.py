"""``/api/v1/performance``: the tuner's state and curve; set a target; curtail or sleep (operator). Changes go
through the device control surface (``openmos.control``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException

from openmos.api.deps import Ctx, Operator
from openmos.api.models import CurtailRequest, PerformanceRequest
from openmos.control import Curtail, SetTarget, UnsupportedControl, to_wire
from openmos.tuning import TargetKind

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
    tuner = ctx.view.agent.tuner
    if body.step_percent is not None:
        if tuner is None:
            raise HTTPException(409, NO_TUNER)
        stepped = tuner.base_target.step(body.step_percent)
        if stepped.kind is TargetKind.POWER:
            command = SetTarget(power_w=stepped.value)
        elif stepped.kind is TargetKind.HASHRATE:
            command = SetTarget(hashrate_ths=stepped.value)
        else:
            raise UnsupportedControl("a relative step needs a power or hashrate target")
    else:
        command = SetTarget(power_w=body.power_w, hashrate_ths=body.hashrate_ths, profile=body.profile)
    ack = await ctx.view.control.execute(command)
    return {"target": str(tuner.base_target) if tuner else None, **to_wire(ack)}


@router.post("/curtail")
async def curtail(body: CurtailRequest, ctx: Ctx, _: Operator) -> dict[str, Any]:
    """Run at a fraction of the target (1 = full) or at a wall power; 0 (fraction or watts) is sleep."""
    ack = await ctx.view.control.execute(Curtail(fraction=body.fraction, watts=body.watts))
    return {"fraction": ctx.view.control.fraction, **to_wire(ack)}
