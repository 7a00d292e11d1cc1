"""The autotuner's state machine: per-chip frequency at per-board voltage for a power, hashrate or J/TH goal.

How it learns a unit (only from counters, sensors and input power; see ``measurement``):
1. lower the ticket difficulty so every chip reports enough nonces for error statistics;
2. sweep at two voltages bracketing where the goal will probably need it (``learning``, ``sweep``): every
   chip's clean limit, on the PLL's frequency grid;
3. plan the lowest voltage whose chips, just under their limits, reach the goal (``planning``); a plan stuck
   at the lowest learned voltage with chips well under their limits sweeps lower first;
4. converge in closed loop on measured power or valid hashrate, trimming single chips (``convergence``);
   then hold it there (STABLE), re-checking every window: chips that age or warm up start to err and are
   trimmed, the power model is refitted on recent windows only, a large temperature shift re-tunes;
5. above stock (overclocking) the plan stays inside the PSU rating and a governor (``governor``) backs off
   before the cooling guard's "hot" level is reached with the fans near full.
Cooling runs underneath on every tick: fan PID, dynamic performance scaling when hot, emergency shutdown
when dangerous. The chip model and a profile per target are saved (``persistence``). Every decision is
logged with its reason and kept in ``status.decisions``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

import numpy as np

from openmos.base.clock import Clock
from openmos.hw.interface import HardwareLimits, HardwareTelemetry, MiningHardware, UnsupportedControl
from openmos.tuning.convergence import correct, efficiency_power, efficiency_start, fine_correct, step_gain, trim
from openmos.tuning.governor import ThermalGovernor
from openmos.tuning.learning import (
    HOLD_SWEEP_SCALE,
    LOWER_SWEEP_SCALE,
    expected_limits,
    first_sweeps,
    lower_sweep,
    next_start,
    upper_sweep,
)
from openmos.tuning.measurement import Meter, Window, error_fraction, hottest
from openmos.tuning.persistence import efficiency_curve, load_knowledge, make_profile, profile_verified, save_knowledge
from openmos.tuning.planning import FloatArray, Knowledge, Plan, fmax_at, snap_down
from openmos.tuning.profiles import ProfileStore, TunedProfile
from openmos.tuning.reference import PowerReference, ReadingCorrection
from openmos.tuning.state import CurvePoint, TunerOptions, TunerState, TunerStatus
from openmos.tuning.sweep import MAX_SWEEP_WINDOWS, Sweep
from openmos.tuning.targets import PerformanceTarget, TargetKind
from openmos.tuning.thermal import CoolingConfig, ThermalAction, ThermalGuard, arrhenius_hazard_ratio

log = logging.getLogger(__name__)

HELD_WINDOWS = 6  # hold windows at one setting whose mean power a fine correction acts on (at least HELD_MIN)
HELD_MIN = 3



class _Interrupted(Exception):
    """Cooling shut the miner down (or the target changed) in the middle of a tuning phase."""


class Autotuner:
    def __init__(self, hw: MiningHardware, target: PerformanceTarget, *, clock: Clock,
                 store: ProfileStore | None = None, cooling: CoolingConfig | None = None,
                 options: TunerOptions | None = None,
                 progress: Callable[[TunerStatus], None] | None = None,
                 reference: PowerReference | None = None) -> None:
        """``reference``: a calibrated wall meter on this unit's circuit; its readings correct the unit's own
        input-power reading (``reference``), which otherwise carries the PSU's own gain and offset error."""
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
        self.knowledge = Knowledge.empty(limits, self.options.start_margin)
        self.freq = np.full(shape, limits.stock_freq_mhz)
        self.voltage = np.full(limits.boards, limits.stock_voltage)
        self.strikes = np.zeros(shape, dtype=np.int64)  # windows a chip spent mostly erring
        self.plan: Plan | None = None
        self.curtail_scale = 1.0
        self._governor = ThermalGovernor()  # overclock governor's share of the goal
        self._efficiency_w: float | None = None  # power goal serving a J/TH ceiling
        self.meter = Meter(hw, clock, self._tick, limits.hashes_per_mhz, reference)
        self.correction = ReadingCorrection()
        self._duty: float | None = None
        self._replan = False
        self._stopped = False
        self._changed_at = -math.inf
        self._ramp_until = -math.inf  # a quick ramp down is bridging the supply's slew until then
        self._bridged: Plan | None = None  # the plan whose clocks follow then
        self._window_mixed = False  # the last window spans a change made from outside the loop
        self._board_on = np.ones(limits.boards, dtype=bool)
        self._tuned_at_c: float | None = None
        self._gain = 1.0  # closed-loop step gain (convergence.step_gain)
        self._last_error: float | None = None
        self._held: list[float] = []  # power readings of hold windows at the present operating point
        self._held_key: tuple[float, float] | None = None

    # -- goals ----------------------------------------------------------------------------------------

    @property
    def dead(self) -> np.ndarray:
        return self.knowledge.dead

    @property
    def governor(self) -> float:
        """The overclock governor's share of the goal (1: none given up)."""
        return self._governor.scale

    @property
    def settle_s(self) -> float:
        return self.limits.settle_s if self.options.settle_s is None else self.options.settle_s

    @property
    def power_cap_w(self) -> float | None:
        cap = self.limits.psu_max_w
        return cap * self.options.psu_headroom if cap else None

    @property
    def effective_target(self) -> PerformanceTarget:
        """What the closed loop aims at now: a power or hashrate goal after DPS, curtailment and governor."""
        return self._goal()[0]

    def _goal(self) -> tuple[PerformanceTarget, PerformanceTarget | None]:
        """(``effective_target``, the power goal it replaced when that was over the PSU's rating, else None)."""
        base = self.base_target
        if base.kind is TargetKind.EFFICIENCY:
            base = PerformanceTarget.power(self._efficiency_w or self._nameplate_w())
        goal = base.scaled(self.guard.scale * self.curtail_scale * self.governor)
        cap = self.power_cap_w
        if cap is not None and goal.kind is TargetKind.POWER and goal.value > cap:
            return PerformanceTarget.power(cap), goal
        return goal, None

    def _nameplate_w(self) -> float:
        return self.limits.nameplate_power_w or 1000.0

    async def set_target(self, target: PerformanceTarget) -> None:
        """Switch target. With a learned chip model this is a re-plan, not a re-tune."""
        self.base_target = target
        self.status.target = str(target)
        self._efficiency_w = None
        self._governor.reset()
        self._decide("new target", f"operator set {target}")
        self._replan = True

    async def curtail(self, fraction: float) -> None:
        """Quick ramp to ``fraction`` of the target (1.0 = back to full) without re-tuning."""
        if not 0.0 < fraction <= 1.5:
            raise ValueError("curtail fraction must be within (0, 1.5]")
        self.curtail_scale = fraction
        self._decide("curtail", f"requested {fraction:.0%} of the target")
        if self.plan is not None and self.knowledge.ready:
            await self._quick_ramp(self._plan())
        self._replan = True

    async def _quick_ramp(self, plan: Plan) -> None:
        """Go to ``plan`` now, without overshooting its power on the way.

        Frequencies change at once, the board supply slews (``settle_s``): a lower plan voltage first runs
        the chips at frequencies that keep the modelled power at the *present* voltage under the plan's
        (always stable: lower clocks than the plan at a higher voltage); the power then falls further as the
        supply comes down, and the plan's own clocks follow once it is there (the first cooling tick after
        ``settle_s``; the tick waits no longer than that)."""
        self._bridged = None
        volts, freq = np.full(self.limits.boards, plan.voltage), np.where(self.dead, 0.0, plan.freq)
        power = self.knowledge.power_model
        self.plan = plan
        if power is not None and (volts < self.voltage - 1e-6).any() \
                and power.predict(self.voltage, freq) > plan.predicted_power_w:
            v2 = self.voltage**2
            dynamic = power.a * float((v2 * freq.sum(axis=1)).sum())
            scale = (plan.predicted_power_w - power.b * float(v2.sum()) - power.c) / dynamic if dynamic > 0 else 1.0
            bridge = np.maximum(freq * min(max(scale, 0.05), 1.0), self.limits.freq_min_mhz)
            await self._apply(volts, snap_down(self.limits, np.where(freq > 0, bridge, 0.0)))
            self._ramp_until = self.clock.now() + self.settle_s
            self._bridged = plan
            self._decide("quick ramp", f"clocks at {min(max(scale, 0.05), 1.0):.0%} of the plan's while the "
                         f"supply slews to {plan.voltage:.2f} V")
            return
        await self._apply_plan(plan)

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
        elif self.status.state is TunerState.SLEEPING:  # slept before any plan existed: tune now
            self._set_state(TunerState.TUNING, "waking", "woken before a plan existed: tuning")

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
        ticket = float(2 ** max(0, math.floor(math.log2(max(rate / self.options.nonces_per_s, 1.0)))))
        try:
            await self.hw.set_ticket_difficulty(ticket)
        except UnsupportedControl:
            tel = self.hw.telemetry()
            ticket = tel.boards[0].chips[0].ticket_difficulty if tel.boards else 1.0
        self.meter.ticket = ticket
        if not self.cooling.has_fans:
            self._duty = None

    # -- cooling and measurement ----------------------------------------------------------------------

    async def _tick(self) -> tuple[HardwareTelemetry, float]:
        """One cooling period: sleep, read sensors, drive fans, act on temperature."""
        bridged = self._bridged
        wait = self.options.tick_s
        if bridged is not None:
            wait = min(wait, max(0.0, self._ramp_until - self.clock.now()))
        await self.clock.sleep(wait)
        if bridged is not None and bridged is self._bridged and self.clock.now() >= self._ramp_until - 1e-9:
            self._bridged = None
            if self.plan is bridged:
                await self._apply_plan(bridged)  # the supply is there: the plan's own clocks
        tel = self.hw.telemetry()
        now = self.clock.now()
        hot = hottest(tel)
        self.status.hottest_c = hot
        if self.cooling.has_fans and self.guard.shutdown_at is None:
            spinning = sum(1 for f in tel.fans if f.rpm > 0)
            if spinning < min(self.cooling.min_fans, self.limits.fans) and self._duty is not None:
                await self._shutdown(f"only {spinning} fans spinning, {self.cooling.min_fans} required")
        duty = self.guard.fan_duty(hot, now)
        if duty is not None and (self._duty is None or abs(duty - self._duty) >= 0.5):
            await self.hw.set_fan_duty(duty)
            self._duty = duty
        self.status.fan_duty_pct = duty
        # Before the first plan the chips run the tuner's sweeps, not the target: a step down could cool nothing.
        action = self.guard.assess(hot, now, duty, can_scale=self.plan is not None)
        self.status.dps_steps = self.guard.dps_steps
        if self.cooling.lifetime_target_c is not None:
            self.status.hazard_ratio = arrhenius_hazard_ratio(self.cooling.limits.target_c, hot)
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
            if self.plan is not None and self.knowledge.ready:
                await self._quick_ramp(self._plan())  # re-plan from the chip model
        return tel, hot

    async def _shutdown(self, why: str) -> None:
        for b in range(self.limits.boards):
            await self.hw.set_board_enabled(b, False)
        self._board_on[:] = False
        if self.guard.shutdown_at is None:
            self.guard.shutdown_at = self.clock.now()
        self._log_event(why)
        self._set_state(TunerState.ERROR, "shutdown", why)
        raise _Interrupted

    async def _window(self, seconds: float) -> Window:
        began = self.clock.now()
        settle = max(0.0, self.settle_s - (self.clock.now() - self._changed_at))
        w = await self.meter.window(seconds, settle)
        # A curtailment or a thermal step during the window: it mixes two settings; learn nothing from it.
        self._window_mixed = self._changed_at > began
        if w.reference_w is not None and self._board_on.all() and not self._window_mixed:
            self.correction.add(w.power_w, w.reference_w)
        if self.correction.calibrated:  # reported and controlled on the reference's scale, mixed or not
            w = dataclasses.replace(w, power_w=self.correction(w.power_w))
        self.status.power_w, self.status.hashrate_ths = w.power_w, w.valid_ths
        if self._window_mixed:
            return w
        if self._board_on.all() and w.power_w > 0:
            self.knowledge.add_sample(self.voltage, self.freq, w.power_w, self.options.samples_kept)
        return w

    # -- controls -------------------------------------------------------------------------------------

    async def _apply(self, voltage: FloatArray, freq: FloatArray) -> None:
        changed_any = False
        for b, (new, old) in enumerate(zip(voltage.tolist(), self.voltage.tolist(), strict=True)):
            if abs(new - old) > 1e-6:
                await self.hw.set_board_voltage(b, new)
                self.voltage[b] = new
                changed_any = True
        changed = np.abs(freq - self.freq) > 0.05
        counts = changed.sum(axis=1).tolist()
        if any(counts):
            rows = freq.tolist()
            for board, count in enumerate(counts):  # one call per board (one ramp)
                if count == 1:
                    c = int(np.flatnonzero(changed[board])[0])
                    await self.hw.set_chip_frequency(board, c, rows[board][c])
                elif count:
                    await self.hw.set_chip_frequencies(board, rows[board])
            changed_any = True
        if changed_any:
            self._changed_at = self.clock.now()
        if changed_any or not self.status.board_voltage:
            self.status.board_voltage = [round(v, 3) for v in self.voltage.tolist()]
        self.freq = freq.copy()

    async def _apply_plan(self, plan: Plan) -> None:
        self.plan = plan
        await self._apply(np.full(self.limits.boards, plan.voltage), np.where(self.dead, 0.0, plan.freq))

    def _plan(self) -> Plan:
        goal, over = self._goal()
        cap = self.power_cap_w
        if over is not None and cap is not None:
            self._decide("cap at PSU rating", f"{over} is over the {cap:,.0f} W the PSU allows: planning at the cap")
        plan = self.knowledge.plan(goal.kind.value, goal.value)
        if cap is not None and plan.predicted_power_w > cap:
            self._decide("cap at PSU rating", f"{goal} needs ~{plan.predicted_power_w:,.0f} W, over the "
                         f"{cap:,.0f} W the PSU allows: planning at the cap")
            plan = self.knowledge.plan("power", cap)
        elif cap is not None and goal.kind is TargetKind.POWER and goal.value >= cap:
            self._decide("cap at PSU rating", f"the power goal is above the {cap:,.0f} W the PSU allows (its rating "
                         "less headroom, on its own reading): planning at the cap")
        return plan

    # -- tuning phases --------------------------------------------------------------------------------

    async def _tune(self) -> None:
        self._replan = False
        self._set_state(TunerState.TUNING, "starting", f"tuning for {self.base_target}")
        if self.store is not None and not self.knowledge.sweep_fmax and load_knowledge(self.store, self.knowledge):
            self._decide("load chip model", "a saved chip model exists for this unit: no sweep needed")
        profile = self.store.get(self.base_target.key) if self.store else None
        unscaled = self.guard.scale == 1.0 and self.curtail_scale == 1.0
        if profile is not None and unscaled and self.base_target.kind is not TargetKind.EFFICIENCY \
                and await self._try_profile(profile):
            return
        if not self.knowledge.sweep_fmax:
            await self._learn()
        while await self._extra_sweep():
            pass
        if self.base_target.kind is TargetKind.EFFICIENCY and self._efficiency_w is None:
            self._start_efficiency()
        await self._converge()

    def _efficiency_bounds(self) -> tuple[float, float]:
        top = self.power_cap_w or 1.3 * self._nameplate_w()
        return 0.3 * self._nameplate_w(), top

    def _start_efficiency(self) -> None:
        lo, hi = self._efficiency_bounds()
        self._efficiency_w, why = efficiency_start(self.knowledge, self.base_target.value, lo, hi)
        self._decide("efficiency power goal", why)

    def _sweep_wanted(self, plan: Plan | None = None,
                      below: float = LOWER_SWEEP_SCALE) -> tuple[float, Plan] | None:
        """A voltage to learn next (``lower_sweep``, ``upper_sweep``) for ``plan`` (default: the model's)."""
        lim, kn = self.limits, self.knowledge
        if self.curtail_scale != 1.0 or not kn.ready:  # a curtailment is short: no sweep for it
            return None
        plan = plan or self._plan()
        v = lower_sweep(lim, kn.sweep_voltages, plan, below)
        v = upper_sweep(lim, kn.sweep_voltages, plan) if v is None else v
        return None if v is None else (v, plan)

    async def _extra_sweep(self, plan: Plan | None = None, below: float = LOWER_SWEEP_SCALE) -> bool:
        """Sweep lower when ``plan`` (default: the model's) sits at the lowest learned voltage with its chips
        well under their limits, or at the plan's voltage when it lies well above every learned one."""
        kn = self.knowledge
        wanted = self._sweep_wanted(plan, below)
        if wanted is None:
            return False
        v, plan = wanted
        near = min(kn.sweep_voltages, key=lambda x: abs(x - v))
        if v < near:
            self._decide("extra sweep", f"the goal needs chips at {plan.scale:.1%} of their limits at {near:.3f} V, "
                         f"the lowest learned: learning limits at {v:.3f} V")
        else:
            self._decide("extra sweep", f"the plan's {plan.voltage:.3f} V is above every learned voltage (highest "
                         f"{near:.3f} V; limits there are extrapolated): learning limits at {v:.3f} V")
        fresh = await self._sweep(v, next_start(fmax_at(kn.sweep_voltages, kn.sweep_fmax, near), near, v),
                                  (60, 70))
        kn.sweep_voltages.append(v)
        kn.sweep_fmax.append(fresh)
        kn.refit()
        self._save_knowledge()
        return True

    async def _try_profile(self, profile: TunedProfile) -> bool:
        self._set_state(TunerState.TUNING, "verifying profile", f"applying saved profile {profile.target_key}")
        freq = np.array(profile.freq_mhz)
        if freq.shape != self.freq.shape or len(profile.board_voltage) != self.limits.boards:
            self._decide("reject profile", "saved profile is for another board layout")
            return False
        self.knowledge.dead |= freq == 0
        await self._apply(np.array(profile.board_voltage), freq)
        window = await self._window(self.options.stable_window_s)
        if profile_verified(profile, window.power_w) and self.knowledge.ready:
            self.plan = Plan(float(np.mean(profile.board_voltage)), 1.0, freq, profile.measured_power_w,
                             profile.measured_hashrate_ths)
            self._set_state(TunerState.STABLE, "holding", "saved profile verified, no re-tuning needed",
                            percent=100.0)
            return True
        self._decide("re-plan", f"saved profile {profile.target_key} did not verify ({window.power_w:.0f} W vs "
                     f"{profile.measured_power_w:.0f} W)")
        return False

    def _goal_share(self) -> tuple[str, float]:
        """The goal's kind and its share of stock operation (nameplate power or stock hashrate)."""
        lim, goal = self.limits, self.effective_target
        if self.base_target.kind is TargetKind.EFFICIENCY:
            return "power", 0.8
        if goal.kind is TargetKind.POWER:
            return "power", goal.value / self._nameplate_w()
        stock = lim.stock_freq_mhz * lim.hashes_per_mhz * lim.boards * lim.chips_per_board / 1e12
        return "hashrate", goal.value / stock

    async def _learn(self) -> None:
        """Two sweeps bracketing the voltage the goal probably needs (``learning``), the lower one first."""
        kn = self.knowledge
        kind, want = self._goal_share()
        v1, v2 = first_sweeps(self.limits, kind, want)
        self._decide("sweep", f"no chip model; the goal is ~{want:.0%} of stock {kind}: learning every chip's "
                     f"limit at {v1:.3f} V, then at {v2:.3f} V")
        first = await self._sweep(v1, expected_limits(self.limits, self.freq.shape, v1), (0, 35))
        kn.sweep_voltages, kn.sweep_fmax = [v1], [first]
        kn.refit()
        second = await self._sweep(v2, next_start(first, v1, v2), (35, 60))
        kn.sweep_voltages.append(v2)
        kn.sweep_fmax.append(second)
        kn.refit()
        self._save_knowledge()

    async def _sweep(self, voltage: float, start: FloatArray, span: tuple[float, float]) -> FloatArray:
        """Every chip's highest clean frequency at ``voltage`` (0 for chips that never run clean)."""
        self.status.phase = f"sweep at {voltage:.2f} V"
        sweep = Sweep.start(self.limits, voltage, start, self.dead, self.options)
        await self._apply(np.full(self.limits.boards, voltage), sweep.freq)
        for _ in range(MAX_SWEEP_WINDOWS):
            if sweep.done.all():
                break
            w = await self._window(self.options.window_s)
            gone = sweep.update(error_fraction(w.nonces, w.errors), self.limits, self.options)
            self._mark_dead(gone)
            await self._apply(np.full(self.limits.boards, voltage), np.where(self.dead, 0.0, sweep.freq))
            self.status.percent = span[0] + (span[1] - span[0]) * float(sweep.done.mean())
            self._emit()
        return sweep.result(self.dead)

    def _mark_dead(self, mask: np.ndarray) -> None:
        new = mask & ~self.dead
        if new.any():
            for b, c in np.argwhere(new):
                self._log_event(f"chip {b}:{c} isolated (errors at every frequency, or silent)")
            self.knowledge.dead |= mask
            self.status.dead_chips = [(int(b), int(c)) for b, c in np.argwhere(self.dead)]

    async def _converge(self) -> None:
        self._set_state(TunerState.TUNING, "converging", f"closing in on {self.effective_target}")
        while self.clock.now() < self._ramp_until:  # a quick ramp's supply is still slewing: its clocks hold
            await self._tick()
        plan = self._plan()
        self._decide("plan", f"{plan.voltage:.2f} V, chips at {plan.scale:.1%} of their clean limits, "
                     f"predicted {plan.predicted_power_w:,.0f} W / {plan.predicted_ths:.1f} TH/s")
        await self._apply_plan(plan)
        calm = 0
        w: Window | None = None
        for i in range(self.options.max_converge_windows):
            w = await self._window(self.options.window_s)
            within, trimmed = await self._step(w)
            calm = calm + 1 if within and not trimmed else 0
            if calm >= 2:
                break
            self.status.percent = max(self.status.percent, 70 + 30 * min(i / 20, 0.95))
            self._emit()
        assert w is not None
        self._entered_stable(w)

    def _entered_stable(self, w: Window) -> None:
        self._tuned_at_c = w.hottest_c
        self._set_state(TunerState.STABLE, "holding", f"holding {self.effective_target}", percent=100.0)
        unscaled = self.guard.scale == 1.0 and self.curtail_scale == 1.0 and self.governor == 1.0
        if self.store is not None and unscaled and self.base_target.kind is not TargetKind.EFFICIENCY:
            self.store.put(make_profile(self.base_target.key, self.voltage, self.freq, w.power_w, w.valid_ths))
            self._save_knowledge()

    async def _step(self, w: Window, held: list[float] | None = None) -> tuple[bool, bool]:
        """Trim chips and correct toward the goal from one window, then apply. (within goal, trimmed)
        ``held``: power readings of the hold windows at the present setting (this one last); from three on, a
        power goal is held on their mean to ``options.hold_tolerance`` (``fine_correct``)."""
        if self._window_mixed:
            return False, False
        kn = self.knowledge
        at_limit = self.plan is not None and self.plan.scale >= 0.98
        t = trim(kn, self.strikes, self.freq, w, self.options, at_limit, self.meter.ticket)
        kn.margin, self.strikes = t.margin, t.strikes
        self._mark_dead(t.dying)
        if t.notable:
            self._decide("trim", t.reason)
        elif t.changed:
            log.debug("tuner trim: %s", t.reason)
        kn.refit()
        settled = abs(w.power_w / self.effective_target.value - 1) <= 2 * self.options.power_tolerance
        if self.base_target.kind is TargetKind.EFFICIENCY and self._efficiency_w is not None and settled:
            # The outer loop moves the power goal only once the power loop has reached the last one.
            lo, hi = self._efficiency_bounds()
            self._efficiency_w, why = efficiency_power(kn, self.base_target.value, self._efficiency_w, w,
                                                       self.options, lo, hi)
            if why:
                self._decide("efficiency", why)
        goal = self.effective_target
        measured = w.power_w if goal.kind is TargetKind.POWER else w.valid_ths
        assert self.plan is not None
        error = (goal.value - measured) / goal.value if measured > 0 else 0.0
        self._gain = step_gain(self._gain, error, self._last_error)
        self._last_error = error if measured > 0 else None
        c = correct(kn, self.plan, goal.kind.value, goal.value, measured, self.voltage, self.freq, self.options,
                    self._gain)
        self.plan = c.plan
        if not c.within:
            self._decide("correct", c.reason)
        if t.changed and c.within:
            self.plan = kn.at(self.plan.voltage, self.plan.scale)  # same point, new per-chip margins
        if t.changed or not c.within:
            await self._apply_plan(self.plan)
        if c.within and held is not None and len(held) >= HELD_MIN and goal.kind is TargetKind.POWER:
            mean = float(np.mean(held[-HELD_WINDOWS:]))
            fine = fine_correct(kn, self.plan, goal.value, mean, self.voltage, self.freq, self.options.hold_tolerance)
            if fine is not None:
                log.debug("tuner fine trim: %s", fine.reason)
                self.plan = fine.plan
                await self._apply_plan(self.plan)
        return c.within, t.changed

    async def _hold(self) -> None:
        if self.plan is None:
            self.plan = self._plan()
        w = await self._window(self.options.stable_window_s)
        self._govern(w)
        # Readings at one operating point (voltage and scale; single-chip trims hardly move power) are averaged.
        key = (round(self.plan.voltage, 6), round(self.plan.scale, 6))
        if key != self._held_key:
            self._held, self._held_key = [], key
        if not self._window_mixed:
            self._held = [*self._held[-(HELD_WINDOWS - 1):], w.power_w]
        within, _ = await self._step(w, self._held)
        if within and self._sweep_wanted(self.plan, HOLD_SWEEP_SCALE) is not None:
            # The closed loop moved the plan where nothing was learned (the model's absolute power was off):
            # learn there, then plan again from the better model.
            await self._extra_sweep(self.plan, HOLD_SWEEP_SCALE)
            self._replan = True
        if self._tuned_at_c is not None and abs(w.hottest_c - self._tuned_at_c) >= self.options.retune_shift_c:
            # Leakage and chip limits move with temperature: re-check every chip and the power balance.
            self._log_event(f"temperature shifted {w.hottest_c - self._tuned_at_c:+.1f} C since tuning: re-tuning")
            self._replan = True
        self._emit()

    def _overclocking(self) -> bool:
        """A goal above the unit's stock operation (or a J/TH ceiling, which may lead there)."""
        lim, target = self.limits, self.base_target
        if target.kind is TargetKind.POWER:
            return target.value > self._nameplate_w()
        if target.kind is TargetKind.HASHRATE:
            stock = lim.stock_freq_mhz * lim.hashes_per_mhz * lim.boards * lim.chips_per_board / 1e12
            return target.value > stock
        return True

    def _govern(self, w: Window) -> None:
        """Above stock: the governor backs off before the guard's "hot" level (``governor``). At or below stock
        the cooling guard's dynamic performance scaling is the (configured) answer to heat."""
        if not self._overclocking() and self.governor == 1.0:
            return
        threshold = self.cooling.limits.hot_c - self.options.thermal_headroom_c
        why = self._governor.update(w.hottest_c, self.status.fan_duty_pct, self.clock.now(), threshold)
        if why:
            self._decide("thermal governor", why)
        self.status.governor_scale = self.governor

    def _save_knowledge(self) -> None:
        if self.store is not None:
            save_knowledge(self.store, self.knowledge)

    # -- reporting ------------------------------------------------------------------------------------

    def efficiency_curve(self, points: int = 10) -> list[CurvePoint]:
        """Power, hashrate and J/TH from 50 % to 110 % of nameplate power (6-20 points), and measured profiles."""
        return efficiency_curve(self.knowledge, self.store, self.limits.nameplate_power_w or 0.0, points)

    def _set_state(self, state: TunerState, phase: str, message: str, percent: float | None = None) -> None:
        self.status.state, self.status.phase, self.status.message = state, phase, message
        self.status.effective_target = str(self.effective_target)
        if percent is not None:
            self.status.percent = percent
        log.info("tuner %s (%s): %s", state.value, phase, message)
        self._emit()

    def _decide(self, action: str, reason: str) -> None:
        self.status.decide(self.clock.now(), action, reason)

    def _log_event(self, text: str) -> None:
        self.status.events = [*self.status.events[-19:], text]
        self._decide("event", text)
        log.warning("tuner: %s", text)

    def _emit(self) -> None:
        if self._progress is not None:
            self._progress(self.status)
