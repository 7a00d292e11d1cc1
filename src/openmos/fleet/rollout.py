"""Staged firmware rollout: cohorts (canary -> 10 % -> all) with health gates, automatic halt and rollback."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmos.fleet import keys
from openmos.fleet.control import FleetController, TargetQuery
from openmos.security.update import DeviceUpdater, SlotInstaller


@dataclass
class RolloutReport:
    version: str
    cohorts: list[list[str]]
    updated: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    halted: bool = False
    reason: str = ""


def plan_cohorts(devices: list[str], shares: tuple[float, ...] = (0.0, 0.10, 1.0), canary: int = 1
                 ) -> list[list[str]]:
    """Split devices into cohorts: ``canary`` units, then cumulative shares of the fleet."""
    cohorts, done = [devices[:canary]], canary
    for share in shares[1:]:
        upto = max(done, math.ceil(share * len(devices)))
        if upto > done:
            cohorts.append(devices[done:upto])
            done = upto
    return [c for c in cohorts if c]


async def rollout(controller: FleetController, target: TargetQuery, version: str, user: str, approvers: list[str],
                  *, soak_s: float = 5.0, healthy: Callable[[dict[str, Any]], bool] | None = None,
                  progress: Callable[[str, float], None] | None = None,
                  package: dict[str, str] | None = None) -> RolloutReport:
    """Install ``version`` cohort by cohort; stop at the first cohort whose health gate fails and put the
    failed cohort back on its previous firmware.

    ``package`` names the signed bundle (TUF target, sha256, from :func:`verified_package`); devices verify
    it against their own root of trust before installing.
    """
    healthy = healthy or (lambda status: bool(status.get("healthy")) and status.get("hashrate_ths", 0) > 0)
    inventory = [inv for inv in await controller.inventory() if target.matches(inv)]
    devices = [keys.device_ref(inv["site"], inv["device"]) for inv in inventory]  # "site/device"
    report = RolloutReport(version, plan_cohorts(devices))
    for n, cohort in enumerate(report.cohorts, 1):
        req = controller.request("install", {"version": version, **(package or {})},
                                 TargetQuery(devices=tuple(cohort)), user)
        for approver in approvers[: req.approvals_needed]:
            controller.approve(req.request_id, approver)
        results = await controller.execute(req.request_id, user)
        previous = {dev: str(res.get("previous", "")) for dev, res in results.items() if res.get("ok")}
        await asyncio.sleep(soak_s)
        sick = []
        for dev in cohort:
            status = await controller.status(*keys.split_ref(dev))
            if status is None or not healthy(status):
                sick.append(dev)
        if progress:
            progress(f"cohort {n}/{len(report.cohorts)}: {len(cohort) - len(sick)}/{len(cohort)} healthy",
                     sum(len(c) for c in report.cohorts[:n]) / max(len(devices), 1))
        if sick:
            report.failed, report.halted = sick, True
            report.reason = f"cohort {n} failed its health gate ({len(sick)}/{len(cohort)} unhealthy): halted"
            for dev in cohort:  # the whole cohort goes back: a partial mix is harder to reason about
                if previous.get(dev):
                    back = controller.request("install", {"version": previous[dev]}, TargetQuery(devices=(dev,)),
                                              user)
                    for approver in approvers[: back.approvals_needed]:
                        controller.approve(back.request_id, approver)
                    await controller.execute(back.request_id, user)
                    report.rolled_back.append(dev)
            return report
        report.updated += cohort
    report.reason = f"{len(report.updated)} devices on {version}"
    return report


def verified_package(repo_url: str, trusted_root: bytes, target: str, state_dir: Path) -> dict[str, str]:
    """Check a bundle against the release repository's signed metadata before rolling it out."""
    updater = DeviceUpdater(state_dir, repo_url, trusted_root, SlotInstaller(state_dir / "unused-slots"))
    _, version, sha256 = updater.verify(target)
    return {"target": target, "version": version, "sha256": sha256}
