"""``/api/v1/maintenance``: the predictive-maintenance model's flagged components, reasons and lead times."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from openmos.api.deps import Ctx

router = APIRouter()


@router.get("/api/v1/maintenance", tags=["status"])
async def get_maintenance(ctx: Ctx) -> dict[str, Any]:
    """Components likely to fail, worst first: which feature is out of band, by how much, and an estimated
    lead time. ``modelled`` is true on simulated hardware; ``warm`` once a day of baselines is learnt."""
    return ctx.view.agent.maintenance.report()
