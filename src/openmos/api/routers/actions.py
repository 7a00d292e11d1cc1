"""``/api/v1/actions/{action}``: pause, resume, sleep, restart the pool side, locate (operator).

Every action is a command of the device control surface (``openmos.control``), the same one cgminer, the
fleet and energy use; the reply is its acknowledgement.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from openmos.api.deps import Ctx, Operator
from openmos.control import Command, Locate, Pause, Reboot, Resume, Sleep, to_wire

router = APIRouter(prefix="/api/v1/actions", tags=["actions"])

LOCATE_S = 60.0
Action = Literal["pause", "resume", "sleep", "restart", "locate"]


def _command(action: Action) -> Command:
    commands: dict[str, Command] = {"pause": Pause(), "resume": Resume(), "sleep": Sleep(), "restart": Reboot(),
                                    "locate": Locate(LOCATE_S)}
    return commands[action]


@router.post("/{action}")
async def act(action: Action, ctx: Ctx, _: Operator) -> dict[str, Any]:
    ack = await ctx.view.control.execute(_command(action))
    return {"action": action, "result": "ok" if ack.ok else "failed", **to_wire(ack)}
