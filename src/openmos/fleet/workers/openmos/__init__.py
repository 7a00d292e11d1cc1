"""An OpenMOS agent on the fleet bus (native worker)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from openmos import __version__
from openmos.api.view import DeviceView
from openmos.miner.agent import MiningAgent
from openmos.miner.config import AgentConfig
from openmos.security.update import DeviceUpdater, SlotInstaller, UpdateRejected
from openmos.tuning import PerformanceTarget, TunerState


class AgentWorker:
    def __init__(self, agent: MiningAgent, device_id: str, tags: dict[str, str] | None = None) -> None:
        self.agent = agent
        self.device_id = device_id
        self.tags = tags or {}
        self.view = DeviceView(agent)

    def inventory(self) -> dict[str, Any]:
        tel = self.agent.telemetry()
        return {"model": self.agent.hardware.model, "firmware": f"openmos {__version__}", "tags": self.tags,
                "boards": len(tel.boards), "chips": sum(len(b.chips) for b in tel.boards)}

    def status(self) -> dict[str, Any]:
        v = self.view
        boards = v.boards()
        temps = [t for b in boards for t in (b.chip_temperatures_c or b.temperatures_c)]
        active = next((p for p in v.pools() if p.active), None)
        return {"hashrate_ths": v.hashrate(60) / 1e12, "power_w": v.power_w, "hottest_c": max(temps, default=None),
                "paused": self.agent.paused, "modelled": v.modelled, "healthy": not self.agent.paused,
                "pools": [{"url": p.url, "user": p.user} for p in v.pools()],
                "pool_url": active.url if active else None,
                "tuner": self.agent.tuner.status.state.value if self.agent.tuner else None}

    async def act(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        agent = self.agent
        if action == "pause":
            await agent.pause()
        elif action == "resume":
            await agent.resume()
        elif action == "reboot":
            await agent.restart()
        elif action == "locate":
            self.view.locate_until = time.time() + 60
        elif action == "curtail":  # the site fast path: quick ramp, no re-tune
            fraction = float(args["fraction"])
            if agent.tuner is not None:
                if fraction <= 0:
                    await agent.tuner.sleep()
                else:
                    if agent.tuner.status.state is TunerState.SLEEPING:
                        await agent.tuner.wake()
                    await agent.tuner.curtail(min(fraction, 1.0))
            elif fraction == 0:
                await agent.pause()
            else:
                await agent.resume()
        elif action == "set_power":
            if agent.tuner is None:
                return {"ok": False, "error": "no autotuner on this hardware"}
            await agent.tuner.set_target(PerformanceTarget.power(float(args["watts"])))
        elif action == "set_pools":
            doc = agent.config.model_dump()
            doc["groups"] = [{"name": "fleet", "pools": [{"url": p["url"], "user": p["user"],
                                                          "password": p.get("password", "x")} for p in args["pools"]]}]
            await agent.apply_pools(AgentConfig.from_dict(doc, source="fleet set_pools"))
        elif action == "install":
            return await self._install(str(args["target"]))
        elif action == "scan":  # the integrity / malware scan, fleet-wide as a bulk action
            report = await agent.run_security_checks()
            if report is None:
                return {"ok": False, "error": "no scan configured on this agent ([security] scan_root)"}
            return {"worst": report.worst(), "findings": [f.__dict__ for f in report.findings][:50],
                    "files_hashed": report.files_hashed}
        else:
            return {"ok": False, "error": f"{action} is not supported by this agent"}
        return {"action": action}

    async def _install(self, target: str) -> dict[str, Any]:
        """Verify the signed bundle against this device's own root of trust and install it A/B."""
        upd = self.agent.config.update
        if not (upd.repo and upd.root_of_trust and upd.state_dir):
            return {"ok": False, "error": "updates are not configured on this agent ([update] repo/root/state)"}
        state = Path(upd.state_dir)
        slots = SlotInstaller(state)
        previous = slots.installed_version() or __version__
        updater = DeviceUpdater(state, upd.repo, Path(upd.root_of_trust).read_bytes(), slots)
        try:
            active = await asyncio.to_thread(updater.install, target, lambda slot: any(slot.iterdir()))
        except UpdateRejected as exc:
            return {"ok": False, "error": str(exc)}
        return {"previous": previous, "active_slot": active, "history": slots.state.history[-2:]}
