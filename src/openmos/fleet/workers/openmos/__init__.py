"""An OpenMOS agent on the fleet bus (native worker): the agent's own control surface
(``openmos.miner.control.AgentControl``) plus the fleet-only actions (signed install, security scan)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from openmos import __version__
from openmos.fleet.workers.edge import BusEdge
from openmos.miner.agent import MiningAgent
from openmos.miner.control import AgentControl
from openmos.security.health import AgentHealthGate
from openmos.security.update import DeviceUpdater, SlotInstaller, UpdateRejected


class AgentWorker(AgentControl, BusEdge):
    fleet_actions = ("install", "scan")

    def __init__(self, agent: MiningAgent, device_id: str, tags: dict[str, str] | None = None) -> None:
        super().__init__(agent, device_id, tags)

    async def fleet_action(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        if action == "install":
            return await self._install(str(args.get("target", ""))[:128])
        report = await self.agent.run_security_checks()  # "scan": the integrity / malware scan, fleet-wide
        if report is None:
            return {"ok": False, "error": "no scan configured on this agent ([security] scan_root)"}
        return {"worst": report.worst(), "findings": [f.__dict__ for f in report.findings][:50],
                "files_hashed": report.files_hashed}

    async def _install(self, target: str) -> dict[str, Any]:
        """Verify the signed bundle against this device's own root of trust and install it A/B."""
        upd = self.agent.config.update
        if not (upd.repo and upd.root_of_trust and upd.state_dir):
            return {"ok": False, "error": "updates are not configured on this agent ([update] repo/root/state)"}
        state = Path(upd.state_dir)
        slots = SlotInstaller(state)
        previous = slots.installed_version() or __version__
        # The trial agent runs with this agent's config; this one pauses meanwhile (the hardware is shared).
        trial_config = state / "trial-agent.toml"
        self.agent.config.save(trial_config)
        pools = {p.url for g in self.agent.config.groups for p in g.pools}
        gate = AgentHealthGate(trial_config, pools, deadline_s=upd.health_deadline_s, log_dir=state)
        was_paused = self.agent.paused
        try:
            updater = DeviceUpdater(state, upd.repo, Path(upd.root_of_trust).read_bytes(), slots)
            if not was_paused:
                await self.agent.pause()
            active = await asyncio.to_thread(updater.install, target, gate)
        except UpdateRejected as exc:
            return {"ok": False, "error": str(exc)}
        finally:
            if not was_paused:
                await self.agent.resume()
        return {"previous": previous, "active_slot": active, "history": slots.state.history[-3:],
                "health": gate.last.reason if gate.last else None}
