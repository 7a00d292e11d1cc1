"""``/api/v1/config``: read (pool passwords masked) and store a validated agent config.

Operators may change pools, performance, hardware and stratum settings; the ``api`` (auth file, allow
lists, hosts), ``security`` and ``update`` sections are the admin's alone: an operator who could point the
accounts file elsewhere or widen the cgminer allow list would make themself admin at the next restart.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query

from openmos.api.auth import Role
from openmos.api.deps import Ctx, Operator
from openmos.miner.config import AgentConfig, ConfigError

router = APIRouter(prefix="/api/v1/config", tags=["config"])
log = logging.getLogger("openmos.api.rest")

ADMIN_SECTIONS = ("api", "security", "update")


@router.get("")
async def get_config(ctx: Ctx) -> dict[str, Any]:
    doc = ctx.view.agent.config.model_dump(mode="json")
    for group in doc["groups"]:
        for pool in group["pools"]:
            pool["password"] = "***"  # never echo pool passwords
    return doc


@router.put("")
async def put_config(body: dict[str, Any], ctx: Ctx, s: Operator,
                     mode: Annotated[Literal["save", "save_and_apply"], Query()] = "save") -> dict[str, Any]:
    """Validate and store a full agent config (atomically). ``save_and_apply`` also applies pools."""
    config = AgentConfig.model_validate(body)  # a ValidationError is answered 422 without echoing the body
    if ctx.config_path is None:
        raise HTTPException(409, "the agent was started without a config file; nothing to save to")
    current = ctx.view.agent.config
    if ctx.config_path.exists():
        try:
            current = AgentConfig.load(ctx.config_path)
        except ConfigError:
            log.warning("config: the stored %s is invalid; comparing with the running config", ctx.config_path)
    changed = [name for name in ADMIN_SECTIONS if getattr(config, name) != getattr(current, name)]
    if changed and not s.role.allows(Role.ADMIN):
        log.warning("config: %s (%s) tried to change %s; refused", s.user, s.role.value, ", ".join(changed))
        raise HTTPException(403, f"only an admin may change the {', '.join(changed)} section(s)")
    config.save(ctx.config_path)
    if mode == "save_and_apply":
        await ctx.view.agent.apply_pools(config)
    return {"saved": str(ctx.config_path), "applied": mode == "save_and_apply"}
