"""Learning a unit: where to sweep, where a sweep starts, and when to sweep again lower -- pure functions.

The tuner knows a goal and the unit's public data (stock voltage and frequency, nameplate power, PLL grid,
supply steps), not its chips. Two textbook scalings place the first sweeps near where the goal will need the
voltage: near nominal a chip's limit rises ~V^3.5 (alpha-power law), so dynamic power (~V^2 f) goes ~V^5.5
and the voltage for a power share s is ~s^0.18; for a hashrate share it is ~(s / 1.05)^0.29, stock chips
keeping ~5 % margin below where they run efficiently  [A]. The closed loop corrects whatever these miss.
"""

from __future__ import annotations

import numpy as np

from openmos.hw.interface import HardwareLimits
from openmos.tuning.planning import FloatArray, Plan

LIMIT_EXPONENT = 3.5  # clean frequency limit ~ V^3.5 near nominal  [A, alpha-power law]
POWER_EXPONENT = 0.18  # board voltage ~ power share^0.18
HASHRATE_EXPONENT = 0.29  # board voltage ~ (hashrate share / STOCK_HEADROOM)^0.29
STOCK_HEADROOM = 1.05  # stock chips run ~5 % under their efficient limit  [A]
START_MARGIN = 0.97  # sweeps start this far under the expected limit: most chips climb 1-3 steps
LOWER_SWEEP_SCALE = 0.985  # a plan at the lowest learned voltage with chips below this share: sweep lower
# (2.5 % under the limits is ~4 supply steps of voltage an S19j Pro at a 40 C inlet could shed: +1.2 % J/TH)
HOLD_SWEEP_SCALE = 0.96  # the same for the plan a holding loop corrected (a sweep then interrupts a held goal)
MAX_SWEEPS = 5  # voltages learned per unit before the tuner stops adding sweeps


def on_volt_grid(limits: HardwareLimits, volts: float) -> float:
    """The supply step nearest ``volts``, within the unit's range."""
    steps = round((volts - limits.volt_min) / limits.volt_step) if limits.volt_step > 0 else 0
    return float(np.clip(limits.volt_min + steps * limits.volt_step, limits.volt_min, limits.volt_max))


def voltage_guess(limits: HardwareLimits, kind: str, share: float) -> float:
    """Board voltage a goal of ``share`` of stock (power or hashrate) probably needs."""
    share = max(min(share, 1.4), 0.2)
    ratio = (share / STOCK_HEADROOM) ** HASHRATE_EXPONENT if kind == "hashrate" else share**POWER_EXPONENT
    return on_volt_grid(limits, limits.stock_voltage * ratio)


def first_sweeps(limits: HardwareLimits, kind: str, share: float) -> tuple[float, float]:
    """Two voltages bracketing the guess, ~2 % apart, lower first (the cooler sweep runs first: a full-speed
    sweep at a high voltage on a hot day would trip the thermal guard before anything is learned)."""
    guess = voltage_guess(limits, kind, share)
    half = max(2 * limits.volt_step, 0.01 * limits.stock_voltage)
    lo = on_volt_grid(limits, guess - half)
    hi = on_volt_grid(limits, max(guess + half, lo + 4 * limits.volt_step))
    if hi - lo < 4 * limits.volt_step - 1e-9:  # pinned at the top of the range
        lo = on_volt_grid(limits, hi - 2 * half)
    return lo, hi


def expected_limits(limits: HardwareLimits, shape: tuple[int, ...], voltage: float) -> FloatArray:
    """Where a first sweep starts: a little under a typical chip's clean limit at ``voltage`` (stock frequency
    with ~8 % margin at stock voltage, scaled ~V^3.5); chips already past it walk down."""
    top = 1.08 * limits.stock_freq_mhz * (voltage / limits.stock_voltage) ** LIMIT_EXPONENT
    return np.full(shape, START_MARGIN * top)


def next_start(fmax: FloatArray, from_v: float, to_v: float) -> FloatArray:
    """Where a sweep at ``to_v`` starts for chips whose limits at ``from_v`` are known."""
    return np.asarray(fmax * (to_v / from_v) ** LIMIT_EXPONENT * START_MARGIN)


def lower_sweep(limits: HardwareLimits, voltages: list[float], plan: Plan,
                below: float = LOWER_SWEEP_SCALE) -> float | None:
    """A voltage to learn next when the plan sits at the lowest learned voltage with its chips well below their
    limits (the goal is cheaper lower down, where nothing is known yet); None when no sweep is needed."""
    if len(voltages) >= MAX_SWEEPS or plan.scale >= below:
        return None
    lowest = min(voltages)
    if plan.voltage > lowest + 1e-9 or lowest - limits.volt_min < 4 * limits.volt_step - 1e-9:
        return None
    want = lowest * max(plan.scale, 0.3) ** (1 / LIMIT_EXPONENT)
    return on_volt_grid(limits, float(np.clip(want, limits.volt_min, lowest - 4 * limits.volt_step)))


def upper_sweep(limits: HardwareLimits, voltages: list[float], plan: Plan) -> float | None:
    """The plan's own voltage, to learn there, when the plan sits well above the highest learned voltage: its
    chip limits are then a straight line extrapolated past the sweeps, and near the threshold voltage (a Bitaxe
    at low power) a limit grows faster than linearly, so the plan takes a voltage it does not need. None when
    the plan is within 4 supply steps of a learned voltage or enough voltages are known."""
    if len(voltages) >= MAX_SWEEPS or plan.voltage <= max(voltages) + 4 * limits.volt_step + 1e-9:
        return None
    return on_volt_grid(limits, plan.voltage)
