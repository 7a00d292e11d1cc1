"""Per-chip physics as pure, vectorised functions (numpy arrays of any shape broadcast together).

Model (shared/reference/physics.md), per chip i with core voltage V/n:
  f_crit = K (V/n - V_th)^alpha / (V/n)                    critical frequency, alpha-power law
  p      = Phi((f - f_crit) / (w f_crit))                  fraction of hashes that are wrong
  P      = C V^2 f + G V^2 exp(a (T_j - 60))                 dynamic + temperature-dependent leakage
  T_air(x) = T_in + x P_board / (m_dot c_p)                  air heating along the board
  T_j    = T_air(x) + R_th P,  R_th = R_full duty^-0.8       junction over local air
Power does not fall when hashes are invalid: p only changes what the hashes are worth.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from openmos.hw.sim.models import ChipType, MinerModel

Array = NDArray[np.float64]
CP_AIR = 1005.0  # J/(kg K)
T_MAX_C = 200.0  # junction temperature beyond which the model stops growing leakage


def voltage_factor(chip: ChipType, v_chip: Array | float) -> Array:
    """(V/n - V_th)^alpha / (V/n): f_crit = K * this. Zero below threshold."""
    v_core = np.asarray(v_chip, dtype=np.float64) / chip.stack
    over = np.clip(v_core - chip.v_threshold, 0.0, None)
    return np.asarray(over**chip.alpha / v_core)


def median_k(model: MinerModel) -> float:
    """K of the median chip: f_crit(V_stock) = crit_margin x f_stock."""
    factor = float(voltage_factor(model.chip, model.stock_chip_voltage))
    return model.chip.crit_margin * model.stock_freq_mhz / factor


def critical_frequency(chip: ChipType, k: Array, v_chip: Array | float) -> Array:
    return np.asarray(k * voltage_factor(chip, v_chip))


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


def wall_power_w(model: MinerModel, chips_w: Array | float, duty: Array | float) -> Array:
    return np.asarray((np.asarray(chips_w) + fan_power_w(model, duty) + model.overhead_w) / model.psu_efficiency)


def steady_state(model: MinerModel, freq: Array, v_board: Array, g: Array, duty: Array | float,
                 t_inlet: Array | float, iterations: int = 12) -> tuple[Array, Array]:
    """Steady (chip power, junction temperature) for settings of shape (..., boards, chips).

    Leakage depends on temperature and temperature on power: a fixed-point iteration converges in a few
    rounds because leakage is a small share of power.
    """
    chip = model.chip
    v_chip = (v_board / model.domains)[..., None]
    x = chip_positions(model)
    duty_b = np.asarray(duty, dtype=np.float64)[..., None, None] if np.ndim(duty) else duty
    t_in = np.asarray(t_inlet, dtype=np.float64)[..., None, None] if np.ndim(t_inlet) else t_inlet
    m_cp = airflow_kg_s(model, duty_b) * CP_AIR
    rth = r_th(chip, duty_b)
    t_j = np.full(np.shape(freq), 60.0)
    for _ in range(iterations):
        p = chip_power(chip, freq, v_chip, g, t_j)
        board = p.sum(axis=-1, keepdims=True)
        t_j = np.minimum(t_in + x * board / m_cp + rth * p, T_MAX_C)
    return chip_power(chip, freq, v_chip, g, t_j), t_j
