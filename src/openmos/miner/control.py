"""The agent's implementation of the control surface (``openmos.control``): one place that turns typed
commands into agent, tuner and hardware calls. REST, cgminer, the fleet worker and energy all come here.

Curtailment goes through the autotuner's public quick ramp (``curtail``/``sleep``/``wake``) when one runs,
so nothing bypasses it; without a tuner, hardware with clocks is scaled uniformly and boards are switched
off to sleep. Chip clocks are never set behind a running tuner's back.
"""

from __future__ import annotations

import logging

from openmos import __version__
from openmos.control import (
    Capabilities,
    ControlSurface,
    CurvePoint,
    DeviceData,
    DeviceInfo,
    InvalidCommand,
    PoolInfo,
    SetCooling,
    SetFrequency,
    SetPools,
    SetTarget,
    UnsupportedControl,
)
from openmos.miner.agent import MiningAgent
from openmos.miner.config import AgentConfig, ConfigError
from openmos.miner.safety import set_uniform_clock
from openmos.tuning import CoolingMode, PerformanceTarget, TargetKind, TunerState

log = logging.getLogger(__name__)


class AgentControl(ControlSurface):
    """The control surface of one ``MiningAgent``."""

    def __init__(self, agent: MiningAgent, device_id: str = "local", tags: dict[str, str] | None = None) -> None:
        super().__init__(device_id)
        self.agent = agent
        self.tags = tags or {}
        self._scale = 1.0  # uniform clock scale applied without a tuner
        self._boards_off = False

    @property
    def capabilities(self) -> Capabilities:
        limits = self.agent.hardware.limits()
        tuned = self.agent.tuner is not None
        return Capabilities(curtail=limits is not None, curtail_watts=self.full_power_w() is not None,
                            target=tuned, pools=True, cooling=not tuned and self.agent.safety is not None,
                            locate=True, reboot=True, frequency=limits is not None and not tuned)

    # -- readings ---------------------------------------------------------------------------------------

    def info(self) -> DeviceInfo:
        tel = self.agent.telemetry()
        return DeviceInfo(self.device_id, self.agent.hardware.model, f"openmos {__version__}",
                          name=self.agent.hardware.model, boards=len(tel.boards),
                          chips=sum(len(b.chips) for b in tel.boards), tags=dict(self.tags), curve=self.curve())

    def curve(self) -> tuple[CurvePoint, ...]:
        """The efficiency curve the tuner measured (profiles that ran) and estimated (its chip model)."""
        tuner = self.agent.tuner
        if tuner is None:
            return ()
        return tuple(CurvePoint(p.power_w, p.hashrate_ths, p.source) for p in tuner.efficiency_curve(10)
                     if p.power_w > 0 and p.hashrate_ths > 0)

    def full_power_w(self) -> float | None:
        tuner = self.agent.tuner
        if tuner is not None and tuner.base_target.kind is TargetKind.POWER:
            return tuner.base_target.value
        limits = self.agent.hardware.limits()
        return limits.nameplate_power_w if limits is not None else None

    def protecting(self) -> str | None:
        return self.agent.safety.tripped if self.agent.safety is not None else None

    def _working(self) -> bool:
        """Healthy means doing the job (hashing now, active pool alive, no protection tripped), not merely
        "not paused": a running agent whose pool is unreachable or whose chips stopped is not healthy."""
        agent = self.agent
        active = next((g.active for g in agent.pools.groups if g.active is not None), None)
        return self.protecting() is None and not agent.paused and agent.hashrate.rate(60) > 0 \
            and active is not None and active.enabled and active.status == "Alive"

    def pools(self) -> tuple[PoolInfo, ...]:
        return tuple(PoolInfo(conn.endpoint.url, conn.endpoint.user, group.active is conn)
                     for group in self.agent.pools.groups for conn in group.connections)

    def get_data(self) -> DeviceData:
        agent = self.agent
        tel = agent.telemetry()
        temps = [t for b in tel.boards for t in (b.chip_temperatures_c or b.temperatures_c)]
        tuner = agent.tuner
        return DeviceData(
            self.device_id, self.state, agent.hashrate.rate(60) / 1e12, tel.input_power_w,
            hottest_c=max(temps, default=None), curtail_fraction=self.fraction, full_power_w=self.full_power_w(),
            fans_rpm=tuple(f.rpm for f in tel.fans), pools=self.pools(), firmware=f"openmos {__version__}",
            target=str(tuner.base_target) if tuner else None, tuner=tuner.status.state.value if tuner else None,
            locate=self.locating, modelled=tel.modelled, healthy=self._working(),
            message=self.protecting() or "", maintenance=agent.maintenance.info())

    # -- hooks ------------------------------------------------------------------------------------------

    async def _stop(self, hold: bool) -> None:
        await self.agent.pause()  # stops work; with a tuner its boards go off (tuner.sleep)
        if self.agent.tuner is None:
            self._boards_off = await self._switch_boards(False)

    async def _run(self, fraction: float) -> None:
        agent, tuner = self.agent, self.agent.tuner
        if agent.paused:
            await agent.resume()  # with a tuner: wake restores its last plan
        if tuner is not None:
            if tuner.status.state is TunerState.SLEEPING:
                await tuner.wake()
            await tuner.curtail(fraction)
            return
        if self._boards_off:
            await self._switch_boards(True)
            self._boards_off = False
        if abs(fraction - self._scale) > 1e-9:
            await self._scale_clocks(fraction)

    async def _switch_boards(self, on: bool) -> bool:
        limits = self.agent.hardware.limits()
        if limits is None:
            return False
        try:
            for b in range(limits.boards):
                await self.agent.hardware.set_board_enabled(b, on)
        except UnsupportedControl:
            return False
        return True

    async def _scale_clocks(self, fraction: float) -> None:
        safety = self.agent.safety
        if safety is not None:  # it combines the curtail with its thermal throttle
            safety.requested = fraction
            await safety.apply_clocks()
        else:
            await set_uniform_clock(self.agent.hardware, fraction)
        self._scale = fraction

    async def _set_target(self, command: SetTarget) -> str:
        tuner = self.agent.tuner
        if tuner is None:
            raise UnsupportedControl("no autotuner on this hardware (no tunable clocks or no [performance] target)")
        limits = self.agent.hardware.limits()
        try:
            target = PerformanceTarget.choose(power_w=command.power_w, hashrate_ths=command.hashrate_ths,
                                              profile=command.profile,
                                              nameplate_w=(limits.nameplate_power_w or 0.0) if limits else 0.0)
        except ValueError as exc:
            raise InvalidCommand(str(exc)) from None
        await tuner.set_target(target)
        return f"target {target}"

    async def _set_pools(self, command: SetPools) -> str:
        doc = self.agent.config.model_dump()
        doc["groups"] = [{"name": "default", "pools": [{"url": p.url, "user": p.user, "password": p.password}
                                                       for p in command.pools]}]
        try:
            config = AgentConfig.from_dict(doc, source="set_pools")
        except ConfigError as exc:
            raise InvalidCommand(str(exc)) from None
        await self.agent.apply_pools(config)
        return f"{len(command.pools)} pool(s) applied"

    async def _set_cooling(self, command: SetCooling) -> str:
        if self.agent.tuner is not None:
            raise UnsupportedControl("the autotuner drives the fans: set cooling in [performance] of the config")
        if self.agent.safety is None:
            raise UnsupportedControl(f"{self.agent.hardware.model} has no fans or sensors")
        self.agent.safety.set_cooling(CoolingMode(command.mode), command.duty_pct)
        return f"cooling {command.mode}"

    async def _reboot(self) -> str:
        await self.agent.restart()
        return "pool connections restarted"

    async def _set_frequency(self, command: SetFrequency) -> str:
        if self.agent.tuner is not None:
            raise UnsupportedControl("the autotuner owns the chip clocks: set a power, hashrate or profile target")
        limits = self.agent.hardware.limits()
        if limits is None:
            raise UnsupportedControl(f"{self.agent.hardware.model} has no settable clocks")
        if not limits.freq_min_mhz <= command.mhz <= limits.freq_max_mhz:
            raise InvalidCommand(f"frequency must be within {limits.freq_min_mhz:g}..{limits.freq_max_mhz:g} MHz")
        boards = range(limits.boards) if command.board == -1 else [command.board]
        if command.board >= limits.boards:
            raise InvalidCommand(f"board must be 0..{limits.boards - 1} (or -1 for all)")
        for b in boards:
            await self.agent.hardware.set_board_frequency(b, command.mhz)
        return f"board {'all' if command.board == -1 else command.board} at {command.mhz:g} MHz"
