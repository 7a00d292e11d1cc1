"""Per-chip physics as pure, vectorised functions (numpy arrays of any shape broadcast together).

Model (shared/reference/physics.md), per chip i with core voltage V/n:
  f_crit = K (V/n - V_th)^alpha / (V/n) (1 - c (T_j - 60))   critical frequency, alpha-power law, falls when hot
  p      = Phi((f - f_crit) / (w f_crit))                  fraction of hashes that are wrong
  P      = C V^2 f + G V^2 exp(a (T_j - 60))                 dynamic + temperature-dependent leakage
  T_air(x) = T_in + x P_board / (m_dot c_p)                  air heating along the board
  T_j    = T_air(x) + R_th P,  R_th = R_full duty^-0.8       junction over local air
  V_string = V_set - R P_board / V_set                     supply-path drop (not in any tuner's model)
  P_wall = (sum P + fans + overhead) / eta(load, T_in)     PSU efficiency curve
Power does not fall when hashes are invalid: p only changes what the hashes are worth.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from openmos.hw.sim.models import ChipType, MinerModel

Array = NDArray[np.float64]
CP_AIR = 1005.0  # J/(kg K)
T_MAX_C = 200.0  # junction temperature beyond which the model stops growing leakage
STOCK_TJ_C = 65.0  # junction temperature at which crit_margin holds  [A]


def voltage_factor(chip: ChipType, v_chip: Array | float) -> Array:
    """(V/n - V_th)^alpha / (V/n): f_crit = K * this. Zero below threshold."""
    v_core = np.asarray(v_chip, dtype=np.float64) / chip.stack
    over = np.clip(v_core - chip.v_threshold, 0.0, None)
    return np.asarray(over**chip.alpha / v_core)


def median_k(model: MinerModel) -> float:
    """K of the median chip: f_crit = crit_margin x f_stock at stock voltage and a typical stock junction.

    The chip voltage at stock is the set voltage less the supply-path drop at nameplate power.
    """
    chips_w = model.nameplate_w * model.psu_efficiency - fan_power_w(model, model.stock_fan_duty) - model.overhead_w
    v_chip = string_voltage(model, model.stock_board_voltage, float(chips_w) / model.boards) / model.domains
    factor = float(voltage_factor(model.chip, v_chip)) * (1 - model.chip.fcrit_temp_coeff * (STOCK_TJ_C - 60.0))
    return model.chip.crit_margin * model.stock_freq_mhz / factor


def critical_frequency(chip: ChipType, k: Array, v_chip: Array | float, t_j: Array | float | None = None) -> Array:
    f = k * voltage_factor(chip, v_chip)
    if t_j is not None and chip.fcrit_temp_coeff:
        f = f * np.clip(1.0 - chip.fcrit_temp_coeff * (np.asarray(t_j) - 60.0), 0.5, 1.2)
    return np.asarray(f)


def error_fraction(chip: ChipType, freq: Array, f_crit: Array) -> Array:
    safe = np.maximum(f_crit, 1e-9)
    return np.asarray(ndtr((freq - safe) / (chip.error_width * safe)))


def chip_power(chip: ChipType, freq: Array, v_chip: Array | float, g: Array, t_junction: Array) -> Array:
    v2 = np.asarray(v_chip, dtype=np.float64) ** 2
    # Leakage runaway is physical, but past T_MAX_C the silicon is gone; capping keeps the maths finite.
    t = np.minimum(t_junction, T_MAX_C)
    return np.asarray(chip.c_dyn * v2 * freq + g * v2 * np.exp(chip.leak_temp_coeff * (t - 60.0)))


def hashrate_ghs(chip: ChipType, freq: Array) -> Array:
    """Total hashes (valid or not) per second in GH/s."""
    return np.asarray(freq * chip.cores / 1000.0)


def r_th(chip: ChipType, duty: Array | float) -> Array:
    return np.asarray(chip.r_th_full * np.maximum(np.asarray(duty, dtype=np.float64), 0.05) ** -0.8)


def airflow_kg_s(model: MinerModel, duty: Array | float) -> Array:
    """Air mass flow per board (boards sit side by side in the fan stream)."""
    return np.asarray(model.airflow_full_kg_s * np.maximum(np.asarray(duty, dtype=np.float64), 0.05) / model.boards)


def fan_power_w(model: MinerModel, duty: Array | float) -> Array:
    return np.asarray(model.fans * model.fan_max_w * np.asarray(duty, dtype=np.float64) ** 3)


def chip_positions(model: MinerModel) -> Array:
    """Position of each chip along the airflow, 0 = inlet, 1 = outlet."""
    cols = model.air_columns
    if cols <= 1:
        return np.zeros(model.chips_per_board)
    col = (np.arange(model.chips_per_board) * cols) // model.chips_per_board
    return np.asarray(col / (cols - 1), dtype=np.float64)


def string_voltage(model: MinerModel, v_set: Array | float, board_chips_w: Array | float) -> Array:
    """Voltage reaching the chip string after the supply path's drop (current = power / voltage)."""
    v = np.asarray(v_set, dtype=np.float64)
    if not model.board_resistance_ohm:
        return v
    current = np.asarray(board_chips_w) / np.maximum(v, 1e-3)
    return np.asarray(np.maximum(v - model.board_resistance_ohm * current, 0.5 * v))


def psu_efficiency(model: MinerModel, out_w: Array | float, t_inlet: Array | float = 25.0) -> Array:
    """PSU efficiency at an output load and inlet temperature; equals ``psu_efficiency`` at 80 % of rating."""
    if not model.psu_curve and not model.psu_temp_coeff:
        return np.asarray(model.psu_efficiency)
    rated_out = model.psu_max_w * model.psu_efficiency
    x = np.clip(np.asarray(out_w) / rated_out, 0.0, 1.5)
    eta = model.psu_efficiency + model.psu_curve * ((0.8 - 0.5) ** 2 - (x - 0.5) ** 2) \
        - model.psu_temp_coeff * (np.asarray(t_inlet) - 25.0)
    return np.asarray(np.clip(eta, 0.5, 0.99))


def wall_power_w(model: MinerModel, chips_w: Array | float, duty: Array | float,
                 t_inlet: Array | float = 25.0, eta_loss: Array | float = 0.0) -> Array:
    """Input power; ``eta_loss`` is efficiency an ageing PSU has lost."""
    out = np.asarray(chips_w) + fan_power_w(model, duty) + model.overhead_w
    return np.asarray(out / (psu_efficiency(model, out, t_inlet) - eta_loss))


class Steady(NamedTuple):
    chip_w: Array  # (..., boards, chips)
    t_j: Array
    v_chip: Array  # (..., boards, 1): chip voltage after the supply-path drop


def steady_state(model: MinerModel, freq: Array, v_board: Array, g: Array, duty: Array | float,
                 t_inlet: Array | float, iterations: int = 12, rth_scale: Array | float = 1.0,
                 airflow_scale: Array | float = 1.0) -> Steady:
    """Steady chip power, junction temperature and chip voltage for settings of shape (..., boards, chips).

    Leakage depends on temperature, temperature on power and the string voltage on current: a fixed-point
    iteration converges in a few rounds because leakage and the drop are small shares.
    ``rth_scale`` (..., boards) ages thermal resistance; ``airflow_scale`` (...) is what worn fans still move.
    """
    chip = model.chip
    x = chip_positions(model)
    duty_b = np.asarray(duty, dtype=np.float64)[..., None, None] if np.ndim(duty) else duty
    t_in = np.asarray(t_inlet, dtype=np.float64)[..., None, None] if np.ndim(t_inlet) else t_inlet
    flow = np.asarray(airflow_scale, dtype=np.float64)
    flow_b = flow[..., None, None] if flow.ndim else flow
    m_cp = airflow_kg_s(model, duty_b) * np.maximum(flow_b, 0.05) * CP_AIR
    rscale = np.asarray(rth_scale, dtype=np.float64)
    rth = r_th(chip, duty_b) * (rscale[..., None] if rscale.ndim else rscale)
    t_j = np.full(np.shape(freq), 60.0)
    v_chip = (v_board / model.domains)[..., None]
    for _ in range(iterations):
        p = chip_power(chip, freq, v_chip, g, t_j)
        board = p.sum(axis=-1, keepdims=True)
        v_chip = string_voltage(model, v_board[..., None], board) / model.domains
        t_j = np.minimum(t_in + x * board / m_cp + rth * p, T_MAX_C)
    return Steady(chip_power(chip, freq, v_chip, g, t_j), t_j, v_chip)
