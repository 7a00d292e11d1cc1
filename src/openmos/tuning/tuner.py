"""The autotuner: per-chip frequency at per-board voltage for a power or hashrate target.

How it learns a unit (only from counters, sensors and input power):
1. lower the ticket difficulty so every chip reports enough nonces for error statistics;
2. sweep at the stock voltage: all chips climb in small frequency steps together; each chip stops at the
   last step where its error fraction stayed clean -- its limit at that voltage. Weak chips that already
   err at the start walk down; chips that err everywhere are dead and switched off;
3. sweep again at a second voltage near where the target will need it, giving every chip a limit curve;
4. plan: the lowest voltage whose chips, just under their limits, can reach the target, then one scale
   for all chips; a wall-power model fitted to every window measured so far predicts the scale;
5. converge in closed loop on measured power (or measured valid hashrate), trimming single chips that err
   and nudging up chips that never do; then hold it there (STABLE), re-checking every window.

Cooling runs underneath on every tick: fan PID, dynamic performance scaling when hot, emergency shutdown
when dangerous. The learned chip model and a profile per target are saved, so a reboot or a new target
needs no new sweep.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from openmos.base.clock import Clock
from openmos.hw.interface import HardwareLimits, HardwareTelemetry, MiningHardware, UnsupportedControl
from openmos.tuning.planning import FloatArray, Plan, PowerModel, error_fraction, fmax_at, frequencies, plan_for
from openmos.tuning.profiles import ChipModel, ProfileStore, TunedProfile
from openmos.tuning.targets import PerformanceTarget, TargetKind
from openmos.tuning.thermal import CoolingConfig, ThermalAction, ThermalGuard, arrhenius_hazard_ratio

log = logging.getLogger(__name__)


class TunerState(StrEnum):
    DISABLED = "DISABLED"
    TUNING = "TUNING"
    STABLE = "STABLE"
    ERROR = "ERROR"
    SLEEPING = "SLEEPING"


@dataclass(frozen=True)
class TunerOptions:
    nonces_per_s: float = 60.0  # per chip, chooses the ticket difficulty
    window_s: float = 10.0  # measurement window while tuning
    stable_window_s: float = 30.0  # measurement window once stable
    tick_s: float = 2.0  # cooling control period
    sweep_step: float = 0.02  # relative frequency step in sweeps
    err_ok: float = 0.005  # keep climbing below this error fraction
    err_bad: float = 0.02  # past the limit above this
    trim_high: float = 0.008  # a chip above this error fraction steps down
    trim_low: float = 0.0015  # a chip below this (with enough counts) may step up
    max_overshoot: float = 0.06  # how far past its swept limit a chip that never errs may climb
    start_margin: float = 0.01
    power_tolerance: float = 0.005
    dead_error: float = 0.5
    max_converge_windows: int = 60
    retune_shift_c: float = 8.0  # re-tune when the hottest chip moved this far since the last tune


@dataclass
class TunerStatus:
    state: TunerState = TunerState.DISABLED
    phase: str = "idle"
    percent: float = 0.0
    message: str = ""
    target: str = ""
    effective_target: str = ""
    power_w: float = 0.0
    hashrate_ths: float = 0.0
    hottest_c: float = 0.0
    fan_duty_pct: float | None = None
    dps_steps: int = 0
    board_voltage: list[float] = field(default_factory=list)
    dead_chips: list[tuple[int, int]] = field(default_factory=list)
    hazard_ratio: float | None = None  # modelled chip failure-rate ratio vs running at the normal target
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CurvePoint:
    power_w: float
    hashrate_ths: float
    j_per_th: float
    source: str  # "measured" (a profile that ran) or "estimated" (from the learned chip model)


class _Interrupted(Exception):
    """Cooling shut the miner down (or the target changed) in the middle of a tuning phase."""


@dataclass
class _Window:
    nonces: np.ndarray
    errors: np.ndarray
    power_w: float
    hashrate_ths: float
    hottest_c: float


class Autotuner:
    def __init__(self, hw: MiningHardware, target: PerformanceTarget, *, clock: Clock,
                 store: ProfileStore | None = None, cooling: CoolingConfig | None = None,
                 options: TunerOptions | None = None,
                 progress: Callable[[TunerStatus], None] | None = None) -> None:
        limits = hw.limits()
        if limits is None:
            raise UnsupportedControl(f"{hw.model} has no tunable clocks")
        self.hw = hw
        self.limits: HardwareLimits = limits
        self.base_target = target
        self.clock = clock
        self.store = store
        self.cooling = cooling or CoolingConfig()
        self.options = options or TunerOptions()
        self.guard = ThermalGuard(self.cooling)
        self.status = TunerStatus(target=str(target))
        self._progress = progress
        shape = (limits.boards, limits.chips_per_board)
        self.freq = np.full(shape, limits.stock_freq_mhz)
        self.voltage = np.full(limits.boards, limits.stock_voltage)
        self.margin = np.full(shape, self.options.start_margin)
        self.dead = np.zeros(shape, dtype=bool)
        self.strikes = np.zeros(shape, dtype=np.int64)  # windows a chip spent mostly erring
        self.sweep_voltages: list[float] = []
        self.sweep_fmax: list[FloatArray] = []
        self.samples: list[tuple[float, float, float]] = []
        self.power_model: PowerModel | None = None
        self.plan: Plan | None = None
        self.curtail_scale = 1.0
        self.ticket = 1.0
        self._last_counts: tuple[np.ndarray, np.ndarray] | None = None
        self._last_time = 0.0
        self._duty: float | None = None
        self._replan = False
        self._stopped = False
        self._board_on = np.ones(limits.boards, dtype=bool)
        self._tuned_at_c: float | None = None

    # -- public control -------------------------------------------------------------------------------

    @property
    def effective_target(self) -> PerformanceTarget:
        return self.base_target.scaled(self.guard.scale * self.curtail_scale)

    async def set_target(self, target: PerformanceTarget) -> None:
        """Switch target. With a learned chip model this is a re-plan, not a re-tune."""
        self.base_target = target
        self.status.target = str(target)
        self._replan = True

    async def curtail(self, fraction: float) -> None:
        """Quick ramp to ``fraction`` of the target (1.0 = back to full) without re-tuning."""
        if not 0.0 < fraction <= 1.5:
            raise ValueError("curtail fraction must be within (0, 1.5]")
        self.curtail_scale = fraction
        if self.plan is not None and self.power_model is not None:
            await self._apply_plan(self._plan())
        self._replan = True

    async def sleep(self) -> None:
        """Stop hashing now (boards off); ``wake`` brings the last plan back at once."""
        for b in range(self.limits.boards):
            await self.hw.set_board_enabled(b, False)
        self._board_on[:] = False
        self._set_state(TunerState.SLEEPING, "sleeping", "boards off on request")

    async def wake(self) -> None:
        for b in range(self.limits.boards):
            await self.hw.set_board_enabled(b, True)
        self._board_on[:] = True
        if self.plan is not None:
            await self._apply_plan(self.plan)
            self._set_state(TunerState.STABLE, "holding", "woken: last plan restored")

    def stop(self) -> None:
        self._stopped = True

    # -- main loop ------------------------------------------------------------------------------------

    async def run(self, until: Callable[[], bool] | None = None) -> None:
        """Tune, then hold the target, until ``stop()`` (or ``until()`` returns True)."""
        await self._prepare()
        while not self._stopped and not (until and until()):
            try:
                if self.guard.shutdown_at is not None or self.status.state is TunerState.SLEEPING:
                    await self._tick()
                elif self.status.state is not TunerState.STABLE or self._replan:
                    await self._tune()
                else:
                    await self._hold()
            except _Interrupted:
                continue

    async def run_for(self, seconds: float) -> None:
        end = self.clock.now() + seconds
        await self.run(until=lambda: self.clock.now() >= end)

    async def _prepare(self) -> None:
        lim = self.limits
        rate = lim.stock_freq_mhz * lim.hashes_per_mhz / 2**32  # difficulty-1 nonces per s per chip
        self.ticket = float(2 ** max(0, math.floor(math.log2(max(rate / self.options.nonces_per_s, 1.0)))))
        try:
            await self.hw.set_ticket_difficulty(self.ticket)
        except UnsupportedControl:
            tel = self.hw.telemetry()
            self.ticket = tel.boards[0].chips[0].ticket_difficulty if tel.boards else 1.0
        if not self.cooling.has_fans:
            self._duty = None
        self._snapshot()

    # -- measurement ----------------------------------------------------------------------------------

    def _counts(self, tel: HardwareTelemetry) -> tuple[np.ndarray, np.ndarray]:
        nonces = np.array([[c.nonces for c in b.chips] for b in tel.boards], dtype=np.int64)
        errors = np.array([[c.errors for c in b.chips] for b in tel.boards], dtype=np.int64)
        return nonces, errors

    def _snapshot(self) -> HardwareTelemetry:
        tel = self.hw.telemetry()
        self._last_counts = self._counts(tel)
        self._last_time = self.clock.now()
        return tel

    @staticmethod
    def _hottest(tel: HardwareTelemetry) -> float:
        temps = [t for b in tel.boards if b.enabled for t in (b.chip_temperatures_c or b.temperatures_c)]
        return max(temps) if temps else 0.0

    async def _tick(self) -> tuple[HardwareTelemetry, float]:
        """One cooling period: sleep, read sensors, drive fans, act on temperature."""
        await self.clock.sleep(self.options.tick_s)
        tel = self.hw.telemetry()
        now = self.clock.now()
        hottest = self._hottest(tel)
        self.status.hottest_c = hottest
        if self.cooling.has_fans and self.guard.shutdown_at is None:
            spinning = sum(1 for f in tel.fans if f.rpm > 0)
            if spinning < min(self.cooling.min_fans, self.limits.fans) and self._duty is not None:
                await self._shutdown(f"only {spinning} fans spinning, {self.cooling.min_fans} required")
        duty = self.guard.fan_duty(hottest, now)
        if duty is not None and (self._duty is None or abs(duty - self._duty) >= 0.5):
            await self.hw.set_fan_duty(duty)
            self._duty = duty
        self.status.fan_duty_pct = duty
        action = self.guard.assess(hottest, now, duty)
        self.status.dps_steps = self.guard.dps_steps
        if self.cooling.lifetime_target_c is not None:
            self.status.hazard_ratio = arrhenius_hazard_ratio(self.cooling.limits.target_c, hottest)
        if action is ThermalAction.SHUTDOWN:
            await self._shutdown(self.guard.events[-1])
        elif action is ThermalAction.RESTART:
            for b in range(self.limits.boards):
                await self.hw.set_board_enabled(b, True)
            self._board_on[:] = True
            self._log_event(self.guard.events[-1])
            self._replan = True
            self._set_state(TunerState.TUNING, "restarting", "restarted after emergency shutdown")
            raise _Interrupted
        elif action in (ThermalAction.STEP_DOWN, ThermalAction.STEP_UP):
            self._log_event(self.guard.events[-1])
            self.status.effective_target = str(self.effective_target)
            if self.plan is not None and self.power_model is not None:
                await self._apply_plan(self._plan())  # quick ramp: re-plan from the chip model
        return tel, hottest

    async def _shutdown(self, why: str) -> None:
        for b in range(self.limits.boards):
            await self.hw.set_board_enabled(b, False)
        self._board_on[:] = False
        if self.guard.shutdown_at is None:
            self.guard.shutdown_at = self.clock.now()
        self._log_event(why)
        self._set_state(TunerState.ERROR, "shutdown", why)
        raise _Interrupted

    async def _window(self, seconds: float) -> _Window:
        self._snapshot()
        start = self.clock.now()
        powers: list[float] = []
        hottest = 0.0
        tel = None
        while self.clock.now() - start < seconds - 1e-9:
            tel, hot = await self._tick()
            hottest = max(hottest, hot)
            if tel.input_power_w is not None:
                powers.append(tel.input_power_w)
        assert tel is not None and self._last_counts is not None
        nonces, errors = self._counts(tel)
        d_n, d_e = nonces - self._last_counts[0], errors - self._last_counts[1]
        dt = self.clock.now() - start
        ths = float(d_n.sum() * self.ticket * 2**32 / dt / 1e12) if dt > 0 else 0.0
        power = float(np.mean(powers)) if powers else 0.0
        vb2 = self.voltage**2
        if self._board_on.all():
            self.samples.append((float((vb2 * self.freq.sum(axis=1)).sum()), float(vb2.sum()), power))
            self.samples = self.samples[-400:]
        self.status.power_w, self.status.hashrate_ths = power, ths
        return _Window(d_n, d_e, power, ths, hottest)

    # -- controls -------------------------------------------------------------------------------------

    async def _apply(self, voltage: np.ndarray, freq: np.ndarray) -> None:
        for b in range(self.limits.boards):
            if abs(voltage[b] - self.voltage[b]) > 1e-6:
                await self.hw.set_board_voltage(b, float(voltage[b]))
                self.voltage[b] = voltage[b]
        changed = np.argwhere(np.abs(freq - self.freq) > 0.05)
        for b, c in changed:
            await self.hw.set_chip_frequency(int(b), int(c), float(freq[b, c]))
        self.freq = freq.copy()
        self.status.board_voltage = [round(float(v), 3) for v in self.voltage]

    async def _apply_plan(self, plan: Plan) -> None:
        self.plan = plan
        await self._apply(np.full(self.limits.boards, plan.voltage), np.where(self.dead, 0.0, plan.freq))

    def _plan(self, voltage: float | None = None, scale: float | None = None) -> Plan:
        assert self.power_model is not None
        target = self.effective_target
        if voltage is None:
            return plan_for(self.limits, self.sweep_voltages, self.sweep_fmax, self.margin, self.power_model,
                            target.kind.value, target.value)
        top = fmax_at(self.sweep_voltages, self.sweep_fmax, voltage)
        top = np.where(self.dead, 0.0, top)
        k = 1.0 if scale is None else scale
        freq = frequencies(self.limits, top, self.margin, k)
        vb = np.full(self.limits.boards, voltage)
        return Plan(voltage, k, freq, self.power_model.predict(vb, freq),
                    float(freq.sum() * self.limits.hashes_per_mhz / 1e12))

    # -- tuning phases --------------------------------------------------------------------------------

    async def _tune(self) -> None:
        self._replan = False
        self._set_state(TunerState.TUNING, "starting", f"tuning for {self.effective_target}")
        if self.store is not None and not self.sweep_fmax:
            self._load_chip_model()
        profile = self.store.get(self.base_target.key) if self.store else None
        unscaled = self.guard.scale == 1.0 and self.curtail_scale == 1.0
        if profile is not None and unscaled and await self._try_profile(profile):
            return
        if not self.sweep_fmax:
            await self._learn()
        elif self._needs_lower_sweep():
            await self._extra_sweep()
        await self._converge()

    def _needs_lower_sweep(self) -> bool:
        """A target far below what the swept voltages serve efficiently: learn the chips lower down."""
        lim = self.limits
        lowest = min(self.sweep_voltages)
        return self._plan().scale < 0.9 and lowest - lim.volt_min >= 4 * lim.volt_step \
            and self.guard.scale == 1.0 and self.curtail_scale == 1.0

    async def _extra_sweep(self) -> None:
        lim = self.limits
        lowest = min(self.sweep_voltages)
        plan = self._plan()
        v = float(np.clip(lowest * plan.scale ** 0.25, lim.volt_min, lowest - 4 * lim.volt_step))
        start = fmax_at(self.sweep_voltages, self.sweep_fmax, lowest) * (v / lowest) ** 2 * 0.94
        fresh = await self._sweep(v, start, (20, 70))
        self.sweep_voltages.append(v)
        self.sweep_fmax.append(fresh)
        self.power_model = PowerModel.fit(self.samples)
        self._save_chip_model()

    async def _try_profile(self, profile: TunedProfile) -> bool:
        self._set_state(TunerState.TUNING, "verifying profile", f"applying saved profile {profile.target_key}")
        freq = np.array(profile.freq_mhz)
        self.dead |= freq == 0
        await self._apply(np.array(profile.board_voltage), freq)
        window = await self._window(self.options.stable_window_s)
        ok = abs(window.power_w / profile.measured_power_w - 1) < 0.02
        if ok and self.power_model is not None:
            self.plan = Plan(float(np.mean(profile.board_voltage)), 1.0, freq, profile.measured_power_w,
                             profile.measured_hashrate_ths)
            self._set_state(TunerState.STABLE, "holding", "saved profile verified, no re-tuning needed",
                            percent=100.0)
            return True
        log.info("saved profile %s did not verify (%.0f W vs %.0f W); re-planning", profile.target_key,
                 window.power_w, profile.measured_power_w)
        return False

    async def _learn(self) -> None:
        lim = self.limits
        first = await self._sweep(lim.stock_voltage, self.freq * 0 + 0.85 * lim.stock_freq_mhz, (0, 40))
        self.sweep_voltages, self.sweep_fmax = [lim.stock_voltage], [first]
        self.power_model = PowerModel.fit(self.samples)
        # Second sweep where the target will need it: guess with P_dyn ~ V^4 (f_max rising ~ V^2).
        target = self.effective_target
        at_stock = self._plan(lim.stock_voltage, 1.0)
        want = target.value / (at_stock.predicted_power_w if target.kind is TargetKind.POWER
                               else at_stock.predicted_ths)
        guess = lim.stock_voltage * max(min(want, 1.3), 0.3) ** 0.25
        steps = round((guess - lim.stock_voltage) / lim.volt_step)
        if abs(steps) < 4:
            steps = -4 if guess <= lim.stock_voltage or lim.stock_voltage + 4 * lim.volt_step > lim.volt_max \
                else 4
        v2 = float(np.clip(lim.stock_voltage + steps * lim.volt_step, lim.volt_min, lim.volt_max))
        start = first * (v2 / lim.stock_voltage) ** 2 * 0.94
        second = await self._sweep(v2, start, (40, 70))
        self.sweep_voltages.append(v2)
        self.sweep_fmax.append(second)
        self.power_model = PowerModel.fit(self.samples)
        self._save_chip_model()

    async def _sweep(self, voltage: float, start: FloatArray, span: tuple[float, float]) -> FloatArray:
        """Every chip's highest clean frequency at ``voltage`` (0 for chips that never run clean)."""
        opt, lim = self.options, self.limits
        self.status.phase = f"sweep at {voltage:.2f} V"
        freq = np.where(self.dead, 0.0, np.clip(start, lim.freq_min_mhz, lim.freq_max_mhz))
        good = np.zeros_like(freq)  # last frequency that ran clean
        done = self.dead.copy()
        fmax = np.zeros_like(freq)
        await self._apply(np.full(lim.boards, voltage), freq)
        for _ in range(80):
            if done.all():
                break
            w = await self._window(opt.window_s)
            err = error_fraction(w.nonces, w.errors)
            live = ~done
            clean = live & (err <= opt.err_ok)
            edge = live & (err > opt.err_ok) & (err <= opt.err_bad)
            bad = live & (err > opt.err_bad)
            good = np.where(clean | edge, freq, good)
            fmax = np.where(edge, freq, fmax)
            done |= edge
            # Past the limit: settle on the last clean step; a chip never clean walks down instead.
            had_good = bad & (good > 0)
            fmax = np.where(had_good, good, fmax)
            done |= had_good
            walk_down = bad & (good == 0)
            freq = np.where(had_good | edge, np.where(had_good, good, freq), freq)
            freq = np.where(walk_down, freq * (1 - 3 * opt.sweep_step), freq)
            gone = walk_down & (freq < lim.freq_min_mhz)
            self._mark_dead(gone)
            done |= gone
            climbing = clean & ~done
            freq = np.where(climbing, freq * (1 + opt.sweep_step), freq)
            capped = climbing & (freq >= lim.freq_max_mhz)
            fmax = np.where(capped, lim.freq_max_mhz, fmax)
            done |= capped
            freq = np.clip(np.where(self.dead, 0.0, freq), 0.0, lim.freq_max_mhz)
            freq = np.where(self.dead, 0.0, np.maximum(freq, np.where(self.dead, 0, lim.freq_min_mhz)))
            await self._apply(np.full(lim.boards, voltage), freq)
            self.status.percent = span[0] + (span[1] - span[0]) * float(done.mean())
            self._emit()
        fmax = np.where(done, fmax, good)
        return np.where(self.dead, 0.0, fmax)

    def _mark_dead(self, mask: np.ndarray) -> None:
        new = mask & ~self.dead
        if new.any():
            for b, c in np.argwhere(new):
                self._log_event(f"chip {b}:{c} isolated (errors at every frequency)")
            self.dead |= mask
            self.status.dead_chips = [(int(b), int(c)) for b, c in np.argwhere(self.dead)]

    def _trim(self, w: _Window) -> bool:
        """Per-chip error trimming and dead-chip isolation; True if anything changed."""
        opt = self.options
        total = w.nonces + w.errors
        err = error_fraction(w.nonces, w.errors)
        enough = total >= 200
        active = ~self.dead & (self.freq > 0)
        # A chip mostly erring first backs off hard; only one that keeps erring after that is dead.
        erring = active & enough & (err > opt.dead_error)
        self.strikes = np.where(erring, self.strikes + 1, 0)
        dying = self.strikes >= 3
        self._mark_dead(dying)
        self.margin = np.where(erring & ~dying, self.margin + 0.10, self.margin)
        high = active & ~erring & enough & (err > opt.trim_high)
        # A chip that stays clean at (nearly) full scale may climb past its swept limit: sweeps step
        # coarsely. Below full scale a clean chip proves nothing about its limit.
        at_limit = self.plan is not None and self.plan.scale >= 0.98
        low = active & (total >= 1500) & (err < opt.trim_low) & (self.margin > -opt.max_overshoot) & at_limit
        self.margin = np.where(high, self.margin + 0.01, self.margin)
        self.margin = np.where(low, np.maximum(self.margin - 0.004, -opt.max_overshoot), self.margin)
        return bool(erring.any() or high.any() or low.any())

    def _measured(self, w: _Window) -> float:
        return w.power_w if self.effective_target.kind is TargetKind.POWER else w.hashrate_ths

    async def _converge(self) -> None:
        self._set_state(TunerState.TUNING, "converging", f"closing in on {self.effective_target}")
        plan = self._plan()
        await self._apply_plan(plan)
        calm = 0
        for i in range(self.options.max_converge_windows):
            w = await self._window(self.options.window_s)
            within, trimmed = await self._step(w)
            calm = calm + 1 if within and not trimmed else 0
            if calm >= 2:
                break
            self.status.percent = max(self.status.percent, 70 + 30 * min(i / 20, 0.95))
            self._emit()
        self._entered_stable(w)

    def _entered_stable(self, w: _Window) -> None:
        self._tuned_at_c = w.hottest_c
        self._set_state(TunerState.STABLE, "holding", f"holding {self.effective_target}", percent=100.0)
        if self.store is not None and self.guard.scale == 1.0 and self.curtail_scale == 1.0:
            self.store.put(TunedProfile(self.base_target.key, [float(v) for v in self.voltage],
                                        self.freq.round(2).tolist(), w.power_w, w.hashrate_ths))
            self._save_chip_model()

    def _correct(self, w: _Window) -> bool:
        """One step of the closed loop on the target. True when already within tolerance."""
        target = self.effective_target.value
        measured = self._measured(w)
        if measured <= 0:
            return False
        error = (target - measured) / target
        assert self.plan is not None and self.power_model is not None
        if abs(error) <= self.options.power_tolerance:
            # On target. If the refined chip limits now reach it at a lower voltage, go there (it is cheaper).
            lower = self._plan()
            if lower.voltage < self.plan.voltage - 1e-9 and lower.scale <= 0.99:
                self.plan = lower
                return False
            return True
        if self.effective_target.kind is TargetKind.POWER:
            share = self.power_model.dynamic_share(self.voltage, self.freq)
            k = self.plan.scale * (1 + error / max(share, 0.3))
        else:
            k = self.plan.scale * (1 + error)
        volt = self.plan.voltage
        lim = self.limits
        if k > 1.0 and volt + lim.volt_step <= lim.volt_max + 1e-9:
            volt, k = self._rebalance(volt + lim.volt_step)
        elif k < 0.9 and volt - lim.volt_step >= lim.volt_min - 1e-9:
            volt, k = self._rebalance(volt - lim.volt_step)
        self.plan = self._plan(volt, min(k, 1.0))
        return False

    async def _step(self, w: _Window) -> tuple[bool, bool]:
        """Trim chips and correct toward the target from one window, then apply. (within target, trimmed)"""
        trimmed = self._trim(w)
        within = self._correct(w)
        assert self.plan is not None
        if trimmed and within:
            self.plan = self._plan(self.plan.voltage, self.plan.scale)  # same point, new per-chip margins
        if trimmed or not within:
            await self._apply_plan(self.plan)
        return within, trimmed

    def _rebalance(self, volt: float) -> tuple[float, float]:
        """Scale at a new voltage that keeps the measured operating point (the model predicts the ratio)."""
        assert self.power_model is not None and self.plan is not None
        target = self.effective_target
        candidate = self._plan(volt, 1.0)
        now = self.power_model.predict(self.voltage, self.freq) if target.kind is TargetKind.POWER \
            else float(self.freq.sum() * self.limits.hashes_per_mhz / 1e12)
        full = candidate.predicted_power_w if target.kind is TargetKind.POWER else candidate.predicted_ths
        return volt, (now / full if full > 0 else 1.0)

    async def _hold(self) -> None:
        if self.plan is None:
            self.plan = self._plan()
        w = await self._window(self.options.stable_window_s)
        await self._step(w)
        if self._tuned_at_c is not None and abs(w.hottest_c - self._tuned_at_c) >= self.options.retune_shift_c:
            # Leakage and chip limits move with temperature: re-check every chip and the power balance.
            self._log_event(f"temperature shifted {w.hottest_c - self._tuned_at_c:+.1f} C since tuning: re-tuning")
            self._replan = True
        self._emit()

    # -- persistence ----------------------------------------------------------------------------------

    def _save_chip_model(self) -> None:
        if self.store is None or self.power_model is None:
            return
        pm = self.power_model
        self.store.put_chip_model(ChipModel(
            [float(v) for v in self.sweep_voltages], [f.round(2).tolist() for f in self.sweep_fmax],
            [pm.a, pm.b, pm.c], [[int(b), int(c)] for b, c in np.argwhere(self.dead)],
            self.margin.round(4).tolist()))

    def _load_chip_model(self) -> None:
        assert self.store is not None
        model = self.store.chip_model()
        if model is None:
            return
        self.sweep_voltages = list(model.sweep_voltages)
        self.sweep_fmax = [np.array(f, dtype=np.float64) for f in model.fmax_mhz]
        self.power_model = PowerModel(*model.power_coeffs)
        for b, c in model.dead:
            self.dead[b, c] = True
        if model.margin:
            self.margin = np.array(model.margin, dtype=np.float64)
        self._log_event("loaded the saved chip model: no sweep needed")

    # -- reporting ------------------------------------------------------------------------------------

    def efficiency_curve(self, points: int = 10) -> list[CurvePoint]:
        """Power, hashrate and J/TH from 50 % to 110 % of nameplate power (6-20 points)."""
        points = min(max(points, 6), 20)
        out: list[CurvePoint] = []
        if self.power_model is not None and self.sweep_fmax:
            stock = self.limits.nameplate_power_w or self._plan(self.limits.stock_voltage, 1.0).predicted_power_w
            for frac in np.linspace(0.5, 1.1, points):
                p = plan_for(self.limits, self.sweep_voltages, self.sweep_fmax, self.margin, self.power_model,
                             "power", float(frac * stock))
                if p.predicted_ths > 0:
                    out.append(CurvePoint(p.predicted_power_w, p.predicted_ths,
                                          p.predicted_power_w / p.predicted_ths, "estimated"))
        if self.store is not None:
            out += [CurvePoint(pr.measured_power_w, pr.measured_hashrate_ths, pr.j_per_th, "measured")
                    for pr in self.store.profiles() if pr.measured_hashrate_ths > 0]
        return sorted(out, key=lambda c: c.power_w)

    def _set_state(self, state: TunerState, phase: str, message: str, percent: float | None = None) -> None:
        self.status.state, self.status.phase, self.status.message = state, phase, message
        self.status.effective_target = str(self.effective_target)
        if percent is not None:
            self.status.percent = percent
        log.info("tuner %s (%s): %s", state.value, phase, message)
        self._emit()

    def _log_event(self, text: str) -> None:
        self.status.events = [*self.status.events[-19:], text]
        log.warning("tuner: %s", text)

    def _emit(self) -> None:
        if self._progress is not None:
            self._progress(self.status)
