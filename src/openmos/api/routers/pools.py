"""``/api/v1/pools``: list, add, enable/disable/reorder, remove (operator)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException

from openmos.api.deps import Ctx, Operator
from openmos.api.models import NewPool, PoolPatch, PoolsReplace
from openmos.control import PoolSpec, SetPools, to_wire
from openmos.miner.config import PoolEndpoint

router = APIRouter(prefix="/api/v1/pools", tags=["pools"])


@router.get("")
async def pools(ctx: Ctx) -> list[dict[str, Any]]:
    return [asdict(p) for p in ctx.view.pools()]


@router.post("", status_code=201)
async def add_pool(body: NewPool, ctx: Ctx, _: Operator) -> dict[str, Any]:
    """Add a pool to a group. The URL is validated (scheme, host syntax, port) and stored normalised."""
    endpoint = PoolEndpoint.checked(body.url, body.user, body.password)
    agent = ctx.view.agent
    if body.group >= len(agent.pools.groups):
        raise HTTPException(404, "no such pool group")
    conn = agent.pools.groups[body.group].add(endpoint)
    return {"url": conn.endpoint.url, "priority": conn.priority}


@router.put("")
async def replace_pools(body: PoolsReplace, ctx: Ctx, _: Operator) -> dict[str, Any]:
    """Replace every pool with this list (one failover group, first = primary), through the control surface."""
    specs = tuple(PoolSpec(PoolEndpoint.checked(p.url, p.user, p.password).url, p.user, p.password)
                  for p in body.pools)
    return to_wire(await ctx.view.control.execute(SetPools(specs)))


@router.patch("/{index}")
async def patch_pool(index: int, body: PoolPatch, ctx: Ctx, _: Operator) -> dict[str, Any]:
    try:
        group, conn = ctx.view.agent.pools.locate(index)
        if body.enabled is not None:
            group.set_enabled(conn, body.enabled)
        if body.priority is not None:
            group.move_to(conn, body.priority)
    except IndexError:
        raise HTTPException(404, "no such pool") from None
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"index": index, "enabled": conn.enabled, "priority": conn.priority}


@router.delete("/{index}")
async def delete_pool(index: int, ctx: Ctx, _: Operator) -> dict[str, Any]:
    try:
        group, conn = ctx.view.agent.pools.locate(index)
        await group.remove(conn)
    except IndexError:
        raise HTTPException(404, "no such pool") from None
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"removed": conn.endpoint.url}
