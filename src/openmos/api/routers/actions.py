"""``/api/v1/actions/{action}``: pause, resume, restart the pool side, locate (operator)."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter

from openmos.api.deps import Ctx, Operator

router = APIRouter(prefix="/api/v1/actions", tags=["actions"])

LOCATE_S = 60


@router.post("/{action}")
async def act(action: Literal["pause", "resume", "restart", "locate"], ctx: Ctx, _: Operator) -> dict[str, str]:
    agent = ctx.view.agent
    if action == "pause":
        await agent.pause()
    elif action == "resume":
        await agent.resume()
    elif action == "restart":
        await agent.restart()
    else:
        ctx.view.locate_until = time.time() + LOCATE_S
    return {"action": action, "result": "ok"}
