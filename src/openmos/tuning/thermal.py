"""Cooling and thermal protection: fan modes, PID, dynamic performance scaling, emergency shutdown.

Temperatures are the hottest chip sensor (or PCB sensor where chips have none). Limits follow LuxOS /
Braiins practice: a target the fans hold, a "hot" level where performance steps down (DPS), and a
"dangerous" level where the miner shuts down at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

BOLTZMANN_EV = 8.617e-5


class CoolingMode(StrEnum):
    AUTO = "auto"  # PID on temperature
    MANUAL = "manual"  # fixed duty
    IMMERSION = "immersion"  # no fans
    HYDRO = "hydro"  # water blocks, no fans


@dataclass(frozen=True)
class ThermalLimits:
    target_c: float = 65.0
    hot_c: float = 75.0
    dangerous_c: float = 85.0

    def __post_init__(self) -> None:
        if not self.target_c < self.hot_c < self.dangerous_c:
            raise ValueError("thermal limits must satisfy target < hot < dangerous")


@dataclass(frozen=True)
class CoolingConfig:
    mode: CoolingMode = CoolingMode.AUTO
    manual_duty_pct: float = 70.0
    min_duty_pct: float = 20.0
    min_fans: int = 1  # fans that must spin for mining to run (ignored without fans)
    limits: ThermalLimits = field(default_factory=ThermalLimits)
    dps_step: float = 0.05  # fraction of the base target removed per DPS step
    dps_min: float = 0.5  # never scale below this fraction of the base target
    dps_interval_s: float = 60.0  # at most one step down per interval while hot
    dps_recover_s: float = 300.0  # time below target - hysteresis before stepping back up
    dps_hysteresis_c: float = 3.0
    restart_after_s: float | None = 600.0  # after an emergency shutdown (None: stay off)
    lifetime_target_c: float | None = None  # lifetime mode: hold chips at or below this instead

    @property
    def has_fans(self) -> bool:
        return self.mode in (CoolingMode.AUTO, CoolingMode.MANUAL)

    @property
    def fan_target_c(self) -> float:
        return min(self.limits.target_c, self.lifetime_target_c or self.limits.target_c)


@dataclass
class Pid:
    """A PID with output clamping and anti-windup; output is fan duty in percent."""

    kp: float = 4.0
    ki: float = 0.08
    kd: float = 0.0
    out_min: float = 20.0
    out_max: float = 100.0
    integral: float = 60.0
    last_error: float | None = None

    def update(self, error: float, dt: float) -> float:
        derivative = 0.0 if self.last_error is None or dt <= 0 else (error - self.last_error) / dt
        self.last_error = error
        candidate = self.integral + self.ki * error * dt
        out = self.kp * error + candidate + self.kd * derivative
        if self.out_min <= out <= self.out_max:  # anti-windup: integrate only while unsaturated
            self.integral = candidate
        return min(max(out, self.out_min), self.out_max)


class ThermalAction(StrEnum):
    NONE = "none"
    STEP_DOWN = "step_down"
    STEP_UP = "step_up"
    SHUTDOWN = "shutdown"
    RESTART = "restart"


@dataclass
class ThermalGuard:
    """Fan duty, DPS steps and emergency shutdown from one temperature reading at a time."""

    config: CoolingConfig
    pid: Pid = field(default_factory=Pid)
    dps_steps: int = 0
    shutdown_at: float | None = None
    last_step_at: float = -math.inf
    cool_since: float | None = None
    last_time: float | None = None
    events: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pid.out_min = self.config.min_duty_pct

    @property
    def scale(self) -> float:
        return max(self.config.dps_min, 1.0 - self.config.dps_step * self.dps_steps)

    @property
    def max_steps(self) -> int:
        return round((1.0 - self.config.dps_min) / self.config.dps_step)

    def fan_duty(self, hottest_c: float, now: float) -> float | None:
        """Fan duty in percent for this reading (None when the mode has no fans)."""
        cfg = self.config
        dt = 0.0 if self.last_time is None else now - self.last_time
        self.last_time = now
        if cfg.mode is CoolingMode.MANUAL:
            return cfg.manual_duty_pct
        if cfg.mode is not CoolingMode.AUTO:
            return None
        if self.shutdown_at is not None:
            return 100.0  # cool down as fast as possible
        return self.pid.update(hottest_c - cfg.fan_target_c, dt)

    def _recovered(self, hottest_c: float, duty_pct: float | None) -> bool:
        """Cool enough to give performance back: fans have headroom at target, or (no fans) well below it."""
        cfg = self.config
        if duty_pct is not None:
            return hottest_c <= cfg.fan_target_c + cfg.dps_hysteresis_c and duty_pct <= 95.0
        return hottest_c < cfg.fan_target_c - cfg.dps_hysteresis_c

    def assess(self, hottest_c: float, now: float, duty_pct: float | None = None,
               can_scale: bool = True) -> ThermalAction:
        """What to do about this reading. ``can_scale`` False: nothing runs at the target yet (a tuner still
        learning its chips sets its own frequencies), so a step down would cool nothing and only lower the goal
        planned later; hot readings then wait (counting nothing) for the first plan. Shutdown never waits."""
        cfg, lim = self.config, self.config.limits
        if self.shutdown_at is not None:
            cooled = hottest_c < lim.target_c - 10
            waited = cfg.restart_after_s is not None and now - self.shutdown_at >= cfg.restart_after_s
            if cooled and waited:
                self.shutdown_at = None
                self.dps_steps = max(self.dps_steps, 1)  # come back a step lower than before
                self.events.append(f"restart after cooling to {hottest_c:.1f} C")
                return ThermalAction.RESTART
            return ThermalAction.NONE
        if hottest_c >= lim.dangerous_c:
            self.shutdown_at = now
            self.events.append(f"EMERGENCY SHUTDOWN: {hottest_c:.1f} C >= dangerous {lim.dangerous_c:.0f} C")
            return ThermalAction.SHUTDOWN
        hot_limit = min(lim.hot_c, (cfg.lifetime_target_c or lim.hot_c) + cfg.dps_hysteresis_c)
        if hottest_c >= hot_limit:
            self.cool_since = None
            if not can_scale:
                return ThermalAction.NONE
            if self.dps_steps < self.max_steps and now - self.last_step_at >= cfg.dps_interval_s:
                self.dps_steps += 1
                self.last_step_at = now
                self.events.append(f"hot ({hottest_c:.1f} C): performance scaled to {self.scale:.0%}")
                return ThermalAction.STEP_DOWN
            return ThermalAction.NONE
        if self.dps_steps and self._recovered(hottest_c, duty_pct):
            self.cool_since = now if self.cool_since is None else self.cool_since
            if now - self.cool_since >= cfg.dps_recover_s and now - self.last_step_at >= cfg.dps_interval_s:
                self.dps_steps -= 1
                self.last_step_at = now
                self.cool_since = None
                self.events.append(f"recovered ({hottest_c:.1f} C): performance back to {self.scale:.0%}")
                return ThermalAction.STEP_UP
        elif hottest_c > cfg.fan_target_c + cfg.dps_hysteresis_c:
            self.cool_since = None  # clearly warm again; a brief blip of fan duty does not reset the wait
        return ThermalAction.NONE


def arrhenius_hazard_ratio(t_from_c: float, t_to_c: float, activation_ev: float = 0.6) -> float:
    """Failure-rate ratio (to / from) for a chip moved between junction temperatures (modelled)."""
    t_from, t_to = t_from_c + 273.15, t_to_c + 273.15
    return math.exp(activation_ev / BOLTZMANN_EV * (1 / t_from - 1 / t_to))
