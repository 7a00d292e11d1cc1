"""Vectorised simulator of N identical-model miners: state arrays shaped (miners, boards, chips).

Hidden per-chip parameters (``_k`` speed, ``_g`` leakage, ``_dead``) are private: code that plays the part
of firmware reads only the ``read_*`` methods and counters, which mirror what real hardware exposes.
The oracle module is the one reader of the hidden parameters, through :meth:`FleetSim.hidden`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openmos.hw.sim import physics
from openmos.hw.sim.models import MinerModel
from openmos.hw.sim.physics import Array

TAU_JUNCTION_S = 20.0  # [A]
TAU_SINK_S = 120.0  # [A]
JUNCTION_SHARE = 0.3  # share of R_th between junction and heatsink (the fast node)  [A]
SIGMA_K, SIGMA_G, RHO_KG = 0.03, 0.30, 0.5  # chip-to-chip variation  [A]
WEAK_FRACTION = (0.01, 0.03)  # share of weak chips per miner  [A]
WEAK_K_FACTOR = (0.60, 0.80)  # weak chips' K multiplier  [A]
POWER_NOISE = 0.005  # relative noise of the PSU input power reading  [A]
SENSOR_NOISE_C = 0.5  # temperature sensor noise  [A]
HASHES_PER_DIFF1 = 2.0**32


@dataclass(frozen=True)
class HiddenChipParams:
    """Ground truth, for the oracle and for scoring only."""

    k: Array
    g: Array
    dead: np.ndarray


class FleetSim:
    def __init__(self, model: MinerModel, miners: int = 1, seed: int = 0, t_inlet: float = 25.0,
                 ticket_difficulty: float = 256.0, sample_counters: bool = True) -> None:
        if miners < 1:
            raise ValueError("a fleet has at least one miner")
        self.model = model
        self.miners = miners
        self.seed = seed
        self.ticket_difficulty = ticket_difficulty
        self.sample_counters = sample_counters
        self._rng = np.random.default_rng(seed)
        shape = (miners, model.boards, model.chips_per_board)
        z_k, z_g = self._rng.standard_normal((2, *shape))
        self._k = physics.median_k(model) * np.exp(SIGMA_K * z_k)
        self._g = model.chip.g_leak * np.exp(SIGMA_G * (RHO_KG * z_k + np.sqrt(1 - RHO_KG**2) * z_g))
        weak_share = self._rng.uniform(*WEAK_FRACTION, size=(miners, 1, 1))
        weak = self._rng.random(shape) < weak_share
        self._k = np.where(weak, self._k * self._rng.uniform(*WEAK_K_FACTOR, size=shape), self._k)
        self._dead = np.zeros(shape, dtype=bool)
        self._noise = np.random.default_rng(seed + 1_000_003)  # measurement noise, separate stream
        # Controls (what firmware can set).
        self.freq = np.full(shape, model.stock_freq_mhz)
        self.v_board = np.full(shape[:2], model.stock_board_voltage)
        self.duty = np.full(miners, model.stock_fan_duty)
        self.t_inlet = np.full(miners, float(t_inlet))
        self.board_enabled = np.ones(shape[:2], dtype=bool)
        self.fan_failed = np.zeros((miners, model.fans), dtype=bool)
        # Counters (what hardware reports).
        self.nonces = np.zeros(shape, dtype=np.int64)
        self.errors = np.zeros(shape, dtype=np.int64)
        self.hashes = np.zeros(shape)
        self.time = 0.0
        self._fcrit: Array | None = None
        self.chip_w, self.t_j = physics.steady_state(model, self._effective_freq(), self.v_board, self._g,
                                                     self.duty, self.t_inlet)
        self.t_sink = self.t_j - JUNCTION_SHARE * physics.r_th(model.chip, self.duty)[:, None, None] * self.chip_w

    # -- hidden truth -------------------------------------------------------------------------------

    def hidden(self) -> HiddenChipParams:
        """Ground-truth chip parameters. For the oracle and scoring only; never for firmware code."""
        return HiddenChipParams(self._k.copy(), self._g.copy(), self._dead.copy())

    def kill_chip(self, miner: int, board: int, chip: int) -> None:
        """A chip fails: every hash it computes is wrong from now on (it still draws power)."""
        self._dead[miner, board, chip] = True

    # -- controls -----------------------------------------------------------------------------------

    def set_board_voltage(self, miner: int, board: int, volts: float) -> None:
        lo, hi = self.model.voltage_range
        if not lo <= volts <= hi:
            raise ValueError(f"board voltage {volts:.3f} V outside {lo:.2f}-{hi:.2f} V for {self.model.name}")
        self.v_board[miner, board] = volts
        self._fcrit = None

    def set_frequency(self, miner: int, board: int, chip: int | slice, mhz: float | Array) -> None:
        values = np.asarray(mhz, dtype=np.float64)
        if np.any((values != 0) & ((values < self.model.min_freq_mhz) | (values > self.model.max_freq_mhz))):
            raise ValueError(f"frequency outside {self.model.min_freq_mhz:.0f}-{self.model.max_freq_mhz:.0f} MHz"
                             " (0 disables a chip)")
        self.freq[miner, board, chip] = values

    def set_fan_duty(self, miner: int, duty: float) -> None:
        if not 0.0 <= duty <= 1.0:
            raise ValueError("fan duty must be within 0..1")
        self.duty[miner] = duty

    # -- physics ------------------------------------------------------------------------------------

    def _effective_freq(self) -> Array:
        return np.where(self.board_enabled[..., None], self.freq, 0.0)

    def f_crit(self) -> Array:
        if self._fcrit is None:
            v_chip = (self.v_board / self.model.domains)[..., None]
            self._fcrit = physics.critical_frequency(self.model.chip, self._k, v_chip)
        return self._fcrit

    def error_fraction(self) -> Array:
        p = physics.error_fraction(self.model.chip, self.freq, self.f_crit())
        return np.where(self._dead, 1.0, p)

    def step(self, dt: float) -> None:
        """Advance the model by ``dt`` simulated seconds (exact exponential relaxation: any dt is stable)."""
        model, chip = self.model, self.model.chip
        freq = self._effective_freq()
        v_chip = (self.v_board / model.domains)[..., None]
        # A disabled board has its supply cut: no dynamic and no leakage power.
        self.chip_w = physics.chip_power(chip, freq, v_chip, self._g, self.t_j) * self.board_enabled[..., None]
        board_w = self.chip_w.sum(axis=-1, keepdims=True) * self.board_enabled[..., None]
        working = 1.0 - self.fan_failed.mean(axis=1)
        m_cp = physics.airflow_kg_s(model, self.duty * np.maximum(working, 0.05))[:, None, None] * physics.CP_AIR
        t_air = self.t_inlet[:, None, None] + physics.chip_positions(model) * board_w / m_cp
        rth = physics.r_th(chip, self.duty)[:, None, None]
        a_sink = 1.0 - np.exp(-dt / TAU_SINK_S)
        a_j = 1.0 - np.exp(-dt / TAU_JUNCTION_S)
        self.t_sink += (t_air + (1 - JUNCTION_SHARE) * rth * self.chip_w - self.t_sink) * a_sink
        self.t_j += (self.t_sink + JUNCTION_SHARE * rth * self.chip_w - self.t_j) * a_j
        hashes = physics.hashrate_ghs(chip, freq) * 1e9 * dt
        self.hashes += hashes
        if self.sample_counters:
            p = self.error_fraction()
            per_ticket = HASHES_PER_DIFF1 * self.ticket_difficulty
            self.nonces += self._noise.poisson(hashes * (1 - p) / per_ticket)
            self.errors += self._noise.poisson(hashes * p / per_ticket)
        self.time += dt

    # -- readings (what hardware exposes) -------------------------------------------------------------

    def read_wall_power(self) -> Array:
        """PSU input power per miner, W, with measurement noise."""
        chips = self.chip_w.sum(axis=(1, 2))
        true = physics.wall_power_w(self.model, chips, self.duty)
        return np.asarray(true * (1 + POWER_NOISE * self._noise.standard_normal(self.miners)))

    def read_board_temps(self, miner: int) -> tuple[Array, Array]:
        """(PCB sensors, chip-temperature sensors) per board, each (boards, sensors), with noise."""
        n = self.model.sensors_per_board
        idx = np.linspace(0, self.model.chips_per_board - 1, n).round().astype(int)
        pcb = self.t_sink[miner][:, idx] - 3.0
        chips = self.t_j[miner][:, idx]
        noise = self._noise.standard_normal((2, *pcb.shape)) * SENSOR_NOISE_C
        return pcb + noise[0], chips + noise[1]

    def read_fan_rpm(self, miner: int) -> list[int]:
        rpm = self.model.fan_max_rpm * self.duty[miner]
        return [0 if self.fan_failed[miner, i] else int(rpm * (1 + 0.01 * self._noise.standard_normal()) + 0.5)
                for i in range(self.model.fans)]

    # -- modelled truth for benchmarks and reports --------------------------------------------------------

    def true_wall_power(self) -> Array:
        return physics.wall_power_w(self.model, self.chip_w.sum(axis=(1, 2)), self.duty)

    def valid_hashrate_ths(self) -> Array:
        """Modelled valid hashrate per miner (TH/s)."""
        ghs = physics.hashrate_ghs(self.model.chip, self._effective_freq()) * (1 - self.error_fraction())
        return np.asarray(ghs.sum(axis=(1, 2)) / 1000.0)

    def settle(self, seconds: float = 1800.0, dt: float = 30.0) -> None:
        """Run long enough for temperatures to reach steady state."""
        for _ in range(int(seconds / dt)):
            self.step(dt)
