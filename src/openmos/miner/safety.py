"""The safety monitor: always on for hardware with sensors, whether an autotuner runs, is off or crashed.

Every period it reads the sensors and explains what it decided:

- fan control (PID / manual duty) and throttling when hot, while no tuner is driving them (a running
  tuner does both itself, with the same ``tuning.thermal.ThermalGuard`` rules);
- shutdown (boards off, or no work where boards cannot be switched) when the hottest sensor reaches
  ``dangerous``, when fewer fans spin than required, or when temperature readings are lost -- even while a
  tuner runs, as a backstop it cannot switch off;
- restart once readings are back, fans spin and chips cooled, after ``restart_after_s`` (never if None).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from openmos.base.clock import Clock
from openmos.base.tasks import cancel_and_wait
from openmos.control import UnsupportedControl
from openmos.hw.interface import HardwareTelemetry, MiningHardware
from openmos.tuning.thermal import CoolingConfig, CoolingMode, ThermalAction, ThermalGuard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SafetyOptions:
    period_s: float = 2.0
    sensor_timeout_s: float = 10.0  # no valid temperature for this long: shut down
    fan_fail_checks: int = 3  # consecutive readings with too few fans spinning before shutdown


async def set_uniform_clock(hw: MiningHardware, factor: float) -> None:
    """Every chip at ``factor`` x stock frequency (clamped to the hardware's range): the untuned curtail/throttle."""
    limits = hw.limits()
    if limits is None:
        raise UnsupportedControl(f"{hw.model} has no clocks to scale")
    mhz = min(limits.freq_max_mhz, max(limits.freq_min_mhz, limits.stock_freq_mhz * factor))
    for b in range(limits.boards):
        await hw.set_board_frequency(b, mhz)


def has_sensors(tel: HardwareTelemetry) -> bool:
    return bool(tel.fans) or any(b.temperatures_c or b.chip_temperatures_c for b in tel.boards)


def hottest(tel: HardwareTelemetry) -> float | None:
    """The hottest valid reading of enabled boards (of all boards when every board is off); None if none."""
    boards = [b for b in tel.boards if b.enabled] or tel.boards
    temps = [t for b in boards for t in (b.chip_temperatures_c or b.temperatures_c)
             if isinstance(t, (int, float)) and math.isfinite(t) and -60.0 < t < 250.0]
    return max(temps) if temps else None


class SafetyMonitor:
    def __init__(self, hw: MiningHardware, cooling: CoolingConfig, *, clock: Clock,
                 tuner_active: Callable[[], bool] = lambda: False,
                 on_trip: Callable[[bool], None] | None = None, options: SafetyOptions | None = None) -> None:
        self.hw = hw
        self.clock = clock
        self.guard = ThermalGuard(cooling)
        self.tuner_active = tuner_active
        self.on_trip = on_trip  # called with True on shutdown, False on restart (the agent stops/starts work)
        self.options = options or SafetyOptions()
        self.tripped: str | None = None
        self.tripped_at: float | None = None
        self.hottest_c: float | None = None
        self.duty_pct: float | None = None
        self.requested = 1.0  # untuned clock scale asked for by the control surface (curtail)
        self.decisions: deque[str] = deque(maxlen=200)
        self._missing_since: float | None = None
        self._fan_strikes = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def cooling(self) -> CoolingConfig:
        return self.guard.config

    def set_cooling(self, mode: CoolingMode, duty_pct: float | None) -> None:
        self.guard.config = replace(self.guard.config, mode=mode,
                                    manual_duty_pct=duty_pct if duty_pct is not None else self.cooling.manual_duty_pct)
        self._explain(f"cooling set to {mode.value}" + (f" at {duty_pct:.0f} %" if duty_pct is not None else ""))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="safety-monitor")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        while True:
            await self.clock.sleep(self.options.period_s)
            try:
                await self.check()
            except Exception:  # the monitor must outlive any single bad reading or backend hiccup
                log.exception("safety check failed; retrying next period")

    def _explain(self, text: str) -> None:
        self.decisions.append(text)
        log.log(logging.WARNING if text.startswith("SHUTDOWN") else logging.INFO, "safety: %s", text)

    async def apply_clocks(self) -> None:
        """Untuned hardware: clocks at the requested curtail times the thermal throttle."""
        if not self.tuner_active() and self.hw.limits() is not None:
            await set_uniform_clock(self.hw, self.requested * self.guard.scale)

    async def check(self) -> None:
        """One period: read the sensors, drive the fans, throttle, shut down or restart; explain each decision."""
        now = self.clock.now()
        try:
            tel: HardwareTelemetry | None = self.hw.telemetry()
        except Exception as exc:
            log.warning("safety: telemetry read failed: %s", exc)
            tel = None
        temp = hottest(tel) if tel is not None else None
        self.hottest_c = temp
        tuned = self.tuner_active()
        if temp is None:
            self._missing_since = now if self._missing_since is None else self._missing_since
            if now - self._missing_since >= self.options.sensor_timeout_s:
                await self._trip(f"no temperature reading for {now - self._missing_since:.0f} s: sensors lost")
            return
        self._missing_since = None
        assert tel is not None
        fans_ok = self._fans_ok(tel)
        if (self.cooling.has_fans and not tuned) or self.tripped:
            duty = self.guard.fan_duty(temp, now)
            if self.tripped and self.cooling.has_fans:
                duty = 100.0  # cool down as fast as possible
            if duty is not None and (self.duty_pct is None or abs(duty - self.duty_pct) >= 0.5):
                with contextlib.suppress(UnsupportedControl):
                    await self.hw.set_fan_duty(duty)
                self.duty_pct = duty
        if self.tripped:
            await self._hold_or_restart(tel, temp, fans_ok, now)
            return
        if not fans_ok:
            await self._trip("fan failure: fewer fans spinning than the configured minimum")
            return
        lim = self.cooling.limits
        if temp >= lim.dangerous_c:
            await self._trip(f"{temp:.1f} C >= dangerous {lim.dangerous_c:.0f} C")
            return
        if not tuned:
            action = self.guard.assess(temp, now, self.duty_pct)
            if action in (ThermalAction.STEP_DOWN, ThermalAction.STEP_UP):
                self._explain(self.guard.events[-1])
                with contextlib.suppress(UnsupportedControl):
                    await self.apply_clocks()

    def _fans_ok(self, tel: HardwareTelemetry) -> bool:
        if not self.cooling.has_fans or not tel.fans:
            return True
        spinning = sum(1 for f in tel.fans if f.rpm > 0)
        if spinning >= min(self.cooling.min_fans, len(tel.fans)):
            self._fan_strikes = 0
            return True
        self._fan_strikes += 1
        return self._fan_strikes < self.options.fan_fail_checks

    async def _boards(self, on: bool) -> None:
        limits = self.hw.limits()
        boards = limits.boards if limits is not None else 0
        try:
            for b in range(boards):
                await self.hw.set_board_enabled(b, on)
        except UnsupportedControl:
            pass
        if self.on_trip is not None:
            self.on_trip(not on)

    async def _trip(self, why: str) -> None:
        self.tripped, self.tripped_at = why, self.clock.now()
        self.guard.shutdown_at = self.tripped_at
        self._explain(f"SHUTDOWN: {why}")
        await self._boards(False)
        if self.cooling.has_fans:  # cool down at once, not at the next check
            with contextlib.suppress(UnsupportedControl):
                await self.hw.set_fan_duty(100.0)
            self.duty_pct = 100.0

    async def _hold_or_restart(self, tel: HardwareTelemetry, temp: float, fans_ok: bool, now: float) -> None:
        if any(b.enabled for b in tel.boards):  # something (a tuner's own restart) switched boards back on
            await self._boards(False)
        restart_after = self.cooling.restart_after_s
        cooled = temp < self.cooling.limits.target_c - 10
        if restart_after is None or self.tripped_at is None or now - self.tripped_at < restart_after:
            return
        if cooled and fans_ok:
            self._explain(f"restart after cooling to {temp:.1f} C (was: {self.tripped})")
            self.tripped = self.tripped_at = None
            self.guard.shutdown_at = None
            self.guard.dps_steps = max(self.guard.dps_steps, 1)  # come back a step lower
            await self._boards(True)
            with contextlib.suppress(UnsupportedControl):
                await self.apply_clocks()
