"""Convergence: the closed loop from one measured window to the next plan, as pure functions.

- ``trim``: per-chip error trimming (a chip that errs steps down, one that never errs at full scale may climb
  a little past its coarse swept limit) and dead-chip isolation;
- ``correct``: one step toward the power or hashrate goal: scale every chip's clean limit, and move the board
  voltage a step when the scale leaves its useful range (the learned power model predicts the ratio);
- ``fine_correct``: once holding, a small power error averaged over windows at one setting is taken out with
  the supply's fine steps as well as the PLL grid (a one-chip board's grid steps are ~0.5-1 % of power);
- ``efficiency_power``: for the profile "max hashrate at J/TH <= X", the power goal that keeps measured J/TH
  just under the ceiling.
Each returns what it decided and why, for the tuner's decision log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openmos.tuning.measurement import IntArray, Window, error_fraction
from openmos.tuning.planning import FloatArray, Knowledge, Plan
from openmos.tuning.state import TunerOptions
from openmos.tuning.sweep import BoolArray

MIN_COUNTS = 200  # nonces + errors before a chip's error fraction is trusted
CLIMB_COUNTS = 1500  # before a clean chip may climb
MAX_DOWN_STEPS = 3  # supply steps an on-target plan moves down per window
MIN_GAIN = 0.25  # the loop's step gain never falls below this


@dataclass(frozen=True)
class TrimResult:
    margin: FloatArray
    strikes: IntArray
    dying: BoolArray  # chips that kept erring after backing off: isolate
    changed: bool
    reason: str
    notable: bool = False  # something stepped down or failed (climbs alone are routine)


def trim(knowledge: Knowledge, strikes: IntArray, freq: FloatArray, w: Window, opt: TunerOptions,
         at_limit: bool, ticket: float = 1.0) -> TrimResult:
    """Per-chip margins from one window's error counts."""
    total = w.nonces + w.errors
    err = error_fraction(w.nonces, w.errors)
    enough = total >= MIN_COUNTS
    active = ~knowledge.dead & (freq > 0)
    margin = knowledge.margin
    # A chip that answers nothing where dozens of nonces were due has dropped off the chain (or its domain
    # has): no margin helps; a few such windows in a row and it is isolated.
    expected = freq * knowledge.limits.hashes_per_mhz * w.seconds / (ticket * 2**32)
    silent = active & (expected >= 30) & (total == 0)
    # A chip mostly erring first backs off hard; only one that keeps erring after that is dead.
    erring = active & enough & (err > opt.dead_error)
    strikes = np.where(erring | silent, strikes + 1, 0)
    dying = strikes >= 3
    margin = np.where(erring & ~dying, margin + 0.10, margin)
    high = active & ~erring & enough & (err > opt.trim_high)
    # A chip that stays clean at (nearly) full scale may climb past its swept limit: sweeps step coarsely.
    # Below full scale a clean chip proves nothing about its limit.
    low = active & (total >= CLIMB_COUNTS) & (err < opt.trim_low) & (margin > -opt.max_overshoot) & at_limit
    margin = np.where(high, margin + 0.01, margin)
    margin = np.where(low, np.maximum(margin - 0.004, -opt.max_overshoot), margin)
    parts = []
    if silent.any():
        parts.append(f"{int(silent.sum())} chips silent (no nonces, no errors)")
    if erring.any():
        parts.append(f"{int(erring.sum())} chips mostly erring backed off 10 %")
    if high.any():
        parts.append(f"{int(high.sum())} chips over {opt.trim_high:.1%} errors stepped down 1 %")
    if low.any():
        parts.append(f"{int(low.sum())} clean chips at full scale climbed 0.4 %")
    return TrimResult(margin, strikes.astype(np.int64), dying,
                      bool(erring.any() or silent.any() or high.any() or low.any()),
                      "; ".join(parts), bool(erring.any() or silent.any() or high.any()))


@dataclass(frozen=True)
class Correction:
    plan: Plan
    within: bool  # already within tolerance of the goal
    reason: str


def step_gain(gain: float, error: float, previous_error: float | None) -> float:
    """Share of the next error to correct: halved each time the error changes sign (the last step overshot:
    windows shorter than the chips' thermal time constant see leakage still moving), regained while it keeps
    its sign. Stops a unit, a one-chip Bitaxe above all, dithering around the goal for ever."""
    if previous_error is None or error == 0:
        return gain
    if error * previous_error < 0:
        return max(MIN_GAIN, gain / 2)
    return min(1.0, gain * 1.5)


def correct(knowledge: Knowledge, plan: Plan, kind: str, goal: float, measured: float, v_board: FloatArray,
            freq: FloatArray, opt: TunerOptions, gain: float = 1.0) -> Correction:
    """One closed-loop step toward ``goal`` (W or TH/s) from the ``measured`` value of the last window;
    ``gain`` (``step_gain``) is the share of the error corrected."""
    assert knowledge.power_model is not None
    lim = knowledge.limits
    if measured <= 0:
        return Correction(plan, False, "nothing measured yet")
    error = (goal - measured) / goal
    if abs(error) <= opt.power_tolerance:
        # On target. If the refined chip limits now reach it at a lower voltage, go there (it is cheaper).
        # A few supply steps at a time, keeping the measured point: the power model is refitted on recent
        # windows near one voltage, and a long jump on its word can land far off the goal.
        # With chips well under their limits, a lower voltage is tried on the model's ratio alone (its absolute
        # prediction can be off by a few %, its ratio between two close voltages hardly).
        lower = knowledge.plan(kind, goal)
        floor = max(lim.volt_min, min(knowledge.sweep_voltages) - lim.volt_step)
        if lower.voltage < plan.voltage - 1e-9 and lower.scale <= 0.99:
            volt = max(lower.voltage, plan.voltage - MAX_DOWN_STEPS * lim.volt_step)
        elif plan.scale < 0.97 and plan.voltage - lim.volt_step >= floor - 1e-9:
            volt = max(floor, plan.voltage - MAX_DOWN_STEPS * lim.volt_step)
        else:
            volt = plan.voltage
        # The longest of those steps whose chips stay under their limits (one chip: a step is 0.2 % of V).
        while volt < plan.voltage - 1e-9:
            lower_v, k = _rebalance(knowledge, kind, volt, v_board, freq)
            if k <= 0.995:
                return Correction(knowledge.at(lower_v, k), False,
                                  f"on target with chips at {plan.scale:.1%} of their limits: {lower_v:.3f} V is "
                                  "cheaper")
            volt += lim.volt_step
        return Correction(plan, True, f"within {opt.power_tolerance:.1%} of the goal")
    if kind == "power":
        # Dynamic power is most of a unit's draw; a power model refitted across a heat wave or a few close
        # voltages can split it oddly, and a small share would turn a 1 % error into a voltage step.
        share = knowledge.power_model.dynamic_share(v_board, freq)
        k = plan.scale * (1 + gain * error / min(max(share, 0.6), 1.0))
    else:
        k = plan.scale * (1 + gain * error)
    volt = plan.voltage
    why = f"measured {measured:,.4g} vs goal {goal:,.4g} ({-error:+.2%}): scale {plan.scale:.3f} -> "
    # A voltage step keeps the corrected operating point: the scale that holds the present point at the
    # new voltage, times the correction this window asked for.
    wanted = k / plan.scale if plan.scale > 0 else 1.0
    if k > 1.0 and volt + lim.volt_step <= lim.volt_max + 1e-9:
        volt, k = _rebalance(knowledge, kind, volt + lim.volt_step, v_board, freq)
        k *= wanted
        why += f"voltage up a step to {volt:.2f} V"
    elif k < 0.9 and volt - lim.volt_step >= lim.volt_min - 1e-9:
        volt, k = _rebalance(knowledge, kind, volt - lim.volt_step, v_board, freq)
        k *= wanted
        why += f"voltage down a step to {volt:.2f} V"
    else:
        why += f"{min(k, 1.0):.3f}"
    return Correction(knowledge.at(volt, min(k, 1.0)), False, why)


FINE_STEPS = 3  # supply steps either side a fine correction considers
FINE_K = (0.0, 0.004, 0.008, 0.012)  # scale nudges above the estimate (the grid rounds frequencies down)
FINE_NUDGE = 0.005  # how much closer to their limits a fine correction may take chips (never at a lower voltage)


def fine_correct(knowledge: Knowledge, plan: Plan, goal: float, measured: float, v_board: FloatArray,
                 freq: FloatArray, tolerance: float) -> Correction | None:
    """A small power error taken out on both grids: board voltages a few supply steps either side, each with
    the scale whose frequencies (snapped to the PLL grid) make the goal by the measured point's ratio (power
    ~ V^2 for leakage, ~ V^2 f for the dynamic share). Of the candidates predicted within ``tolerance``, the
    one with the most hashrate (then the lowest voltage) wins; else the one predicted closest. Chips come at
    most ``FINE_NUDGE`` closer to their clean limits, and none at a lower voltage (a fine trim must not push a
    hot chip into errors).
    None when already within ``tolerance`` or nothing beats the present setting."""
    assert knowledge.power_model is not None
    lim = knowledge.limits
    if measured <= 0 or goal <= 0 or lim.volt_step <= 0 or abs(measured / goal - 1) <= tolerance:
        return None
    share = min(max(knowledge.power_model.dynamic_share(v_board, freq), 0.6), 1.0)
    f_now = float(freq.sum())
    v_now = float(np.mean(v_board))
    if f_now <= 0 or v_now <= 0:
        return None
    floor = max(lim.volt_min, min(knowledge.sweep_voltages) - lim.volt_step)

    def predicted(v: float, f: FloatArray) -> float:
        r2 = (v / v_now) ** 2
        return measured * r2 * ((1 - share) + share * float(f.sum()) / f_now)

    best: tuple[tuple[float, float, float], Plan] | None = None
    for j in range(-FINE_STEPS, FINE_STEPS + 1):
        v = plan.voltage + j * lim.volt_step
        if v < floor - 1e-9 or v > lim.volt_max + 1e-9:
            continue
        top = knowledge.at(v, 1.0)
        f_top = float(top.freq.sum())
        if f_top <= 0:
            continue
        need = f_now * ((goal / measured) * (v_now / v) ** 2 - (1 - share)) / share  # total MHz for the goal
        k0 = need / f_top
        for dk in FINE_K:
            k = min(k0 * (1 + dk), 1.0)
            # Never closer to the limits at a lower voltage; at most a nudge closer at this voltage or above.
            if k <= 0.05 or k > plan.scale + (FINE_NUDGE if j >= 0 else 0.0) + 1e-9:
                continue
            cand = knowledge.at(v, k)
            err = predicted(v, cand.freq) / goal - 1
            inside = abs(err) <= tolerance
            key = (0.0 if inside else 1.0, -float(cand.freq.sum()) if inside else abs(err), v)
            if best is None or key < best[0]:
                best = (key, cand)
    if best is None:
        return None
    cand = best[1]
    now_err = measured / goal - 1
    new_err = predicted(cand.voltage, cand.freq) / goal - 1
    same = abs(cand.voltage - plan.voltage) < 1e-9 and np.array_equal(cand.freq, freq)
    if same or abs(new_err) >= abs(now_err):
        return None
    return Correction(cand, False, f"holding {measured:,.4g} vs goal {goal:,.4g} ({now_err:+.2%}, mean of windows "
                                   f"at one setting): {cand.voltage:.3f} V, scale {cand.scale:.3f}, predicted "
                                   f"{new_err:+.2%}")


def _rebalance(knowledge: Knowledge, kind: str, volt: float, v_board: FloatArray,
               freq: FloatArray) -> tuple[float, float]:
    """Scale at a new voltage that keeps the measured operating point: the same sum of V^2 f (dynamic power)
    for a power goal, the same sum of f for a hashrate goal. No fitted coefficient enters: a power model
    refitted near one voltage splits its terms poorly, and leakage (~V^2) only makes a step down cheaper."""
    candidate = knowledge.at(volt, 1.0)
    if kind == "power":
        now = float((v_board**2 * freq.sum(axis=1)).sum())
        full = float(volt**2 * candidate.freq.sum())
    else:
        now, full = float(freq.sum()), float(candidate.freq.sum())
    return volt, (now / full if full > 0 else 1.0)


def predicted_j_per_th(knowledge: Knowledge, watts: float) -> float:
    plan = knowledge.plan("power", watts)
    return plan.predicted_power_w / plan.predicted_ths if plan.predicted_ths > 0 else float("inf")


def efficiency_start(knowledge: Knowledge, ceiling: float, lo_w: float, hi_w: float) -> tuple[float, str]:
    """The highest planned power whose predicted J/TH is at or under ``ceiling`` (model only)."""
    powers = np.linspace(lo_w, hi_w, 40)
    jth = np.array([predicted_j_per_th(knowledge, float(p)) for p in powers])
    ok = jth <= ceiling
    if not ok.any():
        best = float(powers[int(np.argmin(jth))])
        return best, (f"J/TH ceiling {ceiling:.2f} is below the best predicted {jth.min():.2f}: "
                      f"running at the most efficient point, {best:,.0f} W")
    watts = float(powers[ok].max())
    return watts, f"highest power predicted to stay under {ceiling:.2f} J/TH: {watts:,.0f} W"


def efficiency_power(knowledge: Knowledge, ceiling: float, power_goal: float, w: Window,
                     opt: TunerOptions, lo_w: float, hi_w: float) -> tuple[float, str | None]:
    """Next power goal from a window's measured J/TH against the ceiling (None reason: no change)."""
    measured = w.j_per_th
    if not np.isfinite(measured) or w.power_w <= 0:
        return power_goal, None
    aim = ceiling * (1 - opt.efficiency_tolerance)
    error = (aim - measured) / aim  # > 0: room to spend more power
    if -opt.efficiency_tolerance / 2 <= error <= opt.efficiency_tolerance:
        return power_goal, None
    # Elasticity of J/TH with power, from the learned model around the present goal.
    j0 = predicted_j_per_th(knowledge, power_goal)
    j1 = predicted_j_per_th(knowledge, power_goal * 1.05)
    elasticity = np.log(j1 / j0) / np.log(1.05) if np.isfinite(j0) and np.isfinite(j1) and j0 > 0 else 0.0
    step = 0.7 * error / max(float(elasticity), 0.25)  # damped: J/TH readings are noisy
    step = float(np.clip(step, -0.08, 0.05))
    new = float(np.clip(power_goal * (1 + step), lo_w, hi_w))
    return new, (f"measured {measured:.3f} J/TH vs ceiling {ceiling:.3f}: power goal "
                 f"{power_goal:,.0f} -> {new:,.0f} W")
