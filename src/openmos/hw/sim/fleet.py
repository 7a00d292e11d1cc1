"""Vectorised simulator of N identical-model miners: state arrays shaped (miners, boards, chips).

Hidden per-chip parameters (``_k`` speed, ``_g`` leakage, their ageing, ``_dead``/``_silent``) are private:
code that plays the part of firmware reads only the ``read_*`` methods and counters, which mirror what real
hardware exposes. The oracle is the one reader of the hidden parameters, through :meth:`FleetSim.hidden`.

Settings are requests: ``freq`` and ``v_board`` hold what firmware asked for (snapped to the PLL grid and the
supply's steps); what the chips run at follows with the PLL ramp and the supply's slew (``Realism``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from openmos.hw.sim import physics
from openmos.hw.sim.faults import FaultEvent, FaultKind
from openmos.hw.sim.models import MinerModel
from openmos.hw.sim.physics import Array
from openmos.hw.sim.pll import pll_grid, snap_nearest
from openmos.hw.sim.precursors import Failure, Wear
from openmos.hw.sim.realism import SECONDS_PER_YEAR, Realism

TAU_JUNCTION_S = 20.0  # [A]
TAU_SINK_S = 120.0  # [A]
JUNCTION_SHARE = 0.3  # share of R_th between junction and heatsink (the fast node)  [A]
SIGMA_K, SIGMA_G, RHO_KG = 0.03, 0.30, 0.5  # chip-to-chip variation  [A]
WEAK_FRACTION = (0.01, 0.03)  # share of weak chips per miner  [A]
WEAK_K_FACTOR = (0.60, 0.80)  # weak chips' K multiplier  [A]
POWER_NOISE = 0.005  # relative noise of the ideal simulator's power reading  [A]
METER_STREAM = 4_000_037  # the power meters' own random stream (see ``meter_rng``)
SENSOR_NOISE_C = 0.5  # temperature sensor noise  [A]
HASHES_PER_DIFF1 = 2.0**32
BOLTZMANN_EV = 8.617e-5
AGEING_REF_K = 343.15  # 70 C


def meter_rng(model_key: str, seed: int, meter: str) -> np.random.Generator:
    """The random stream of one kind of power meter on one unit: a function of the model, the seed and the meter.

    Seeds number the units of one model; keyed by the seed alone, the S21 and the S19 of seed 0 would carry the
    very same meter error, and a 5-seed matrix over six models would sample only five meter errors.  [A]"""
    tags = [seed, zlib.crc32(model_key.encode()), zlib.crc32(meter.encode()), METER_STREAM]
    return np.random.default_rng(tags)


def linear11(value: Array) -> Array:
    """Quantise as a PMBus LINEAR11 reading does: 11-bit signed mantissa, 5-bit exponent  [S PMBus]."""
    v = np.asarray(value, dtype=np.float64)
    mag = np.maximum(np.abs(v), 1e-9)
    exp = np.clip(np.ceil(np.log2(mag / 1023.0)), -16, 15)
    step = 2.0**exp
    return np.asarray(np.round(v / step) * step)


@dataclass(frozen=True)
class HiddenChipParams:
    """Ground truth now (ageing included), for the oracle and for scoring only."""

    k: Array
    g: Array
    dead: NDArray[np.bool_]  # chips that produce no valid hashes (dead or silent)
    rth_scale: Array  # (miners, boards): thermal resistance relative to new
    airflow_scale: Array  # (miners,): share of full airflow the fans still move


class FleetSim:
    def __init__(self, model: MinerModel, miners: int = 1, seed: int = 0, t_inlet: float = 25.0,
                 ticket_difficulty: float = 256.0, sample_counters: bool = True,
                 realism: Realism | None = None) -> None:
        if miners < 1:
            raise ValueError("a fleet has at least one miner")
        self.realism = realism or Realism()
        self.model = self.realism.apply(model)
        model = self.model
        self.miners = miners
        self.seed = seed
        self.ticket_difficulty = ticket_difficulty
        self.sample_counters = sample_counters
        self.grid: tuple[float, ...] = pll_grid(model.chip, model.min_freq_mhz, model.max_freq_mhz) \
            if self.realism.pll_grid else ()
        self._grid = np.asarray(self.grid, dtype=np.float64)
        self._rng = np.random.default_rng(seed)
        shape = (miners, model.boards, model.chips_per_board)
        z_k, z_g = self._rng.standard_normal((2, *shape))
        self._k = physics.median_k(model) * np.exp(SIGMA_K * z_k)
        self._g = model.chip.g_leak * np.exp(SIGMA_G * (RHO_KG * z_k + np.sqrt(1 - RHO_KG**2) * z_g))
        weak_share = self._rng.uniform(*WEAK_FRACTION, size=(miners, 1, 1))
        weak = self._rng.random(shape) < weak_share
        self._k = np.where(weak, self._k * self._rng.uniform(*WEAK_K_FACTOR, size=shape), self._k)
        self._age_k = np.ones(shape)
        self._age_g = np.ones(shape)
        self._age_rth = np.ones(shape[:2])
        self.wear = Wear(model, miners)  # degradation before failures (precursors.py); neutral until scheduled
        self._dead = np.zeros(shape, dtype=bool)
        self._silent = np.zeros(shape, dtype=bool)
        self._noise = np.random.default_rng(seed + 1_000_003)  # measurement noise, separate stream
        self._faults = np.random.default_rng(seed + 2_000_003)  # random faults, separate stream
        # Controls (what firmware can set) and what the hardware actually runs at.
        self.freq = np.full(shape, self._snap_f(np.full(1, model.stock_freq_mhz))[0])
        self.v_board = np.full(shape[:2], model.stock_board_voltage)
        self._freq_run = self.freq.copy()
        self._v_run = self.v_board.copy()
        self.duty = np.full(miners, model.stock_fan_duty)
        self.t_inlet = np.full(miners, float(t_inlet))
        self.board_enabled = np.ones(shape[:2], dtype=bool)
        self.fan_failed = np.zeros((miners, model.fans), dtype=bool)
        self.fan_health = np.ones((miners, model.fans))
        self._fan_wear_per_s = np.zeros((miners, model.fans))
        n_sensors = model.sensors_per_board
        self._stuck = np.zeros((miners, model.boards, n_sensors), dtype=bool)
        self._stuck_value = np.zeros((miners, model.boards, n_sensors))
        # The PSU's two power readings, READ_PIN (input) and READ_POUT (output): each a separate sensing path
        # with its own per-unit gain and offset error [A], drawn from a stream of their own per model and seed
        # (the same seed on another model is another PSU, not the same one: see ``meter_rng``).
        if self.realism.meter_errors:
            meters = meter_rng(model.key, seed, "psu")
            gain_in, gain_out = 1 + np.clip(meters.standard_normal((2, miners)), -2.5, 2.5) * model.meter_gain_sigma
            offset_in, offset_out = meters.standard_normal((2, miners)) * model.meter_offset_w
            self._meter_gain, self._meter_offset = gain_in, offset_in
            self._pout_gain, self._pout_offset = gain_out, offset_out
        else:
            self._meter_gain, self._meter_offset = np.ones(miners), np.zeros(miners)
            self._pout_gain, self._pout_offset = np.ones(miners), np.zeros(miners)
        # Counters (what hardware reports).
        self.nonces = np.zeros(shape, dtype=np.int64)
        self.errors = np.zeros(shape, dtype=np.int64)
        self.hashes = np.zeros(shape)
        self.time = 0.0
        self.events: list[FaultEvent] = []
        if self.realism.inlet is not None:
            self.t_inlet[:] = self.realism.inlet.at(0.0)
        steady = physics.steady_state(model, self._effective_freq(), self.v_board, self._g, self.duty, self.t_inlet)
        self.chip_w, self.t_j, self._v_chip = steady
        self.t_sink = self.t_j - JUNCTION_SHARE * physics.r_th(model.chip, self.duty)[:, None, None] * self.chip_w
        self._p: Array | None = None
        self._meter_w = self.true_wall_power()
        self._meter_out_w = self.dc_power()

    # -- hidden truth -------------------------------------------------------------------------------

    def hidden(self) -> HiddenChipParams:
        """Ground-truth chip parameters now. For the oracle and scoring only; never for firmware code."""
        return HiddenChipParams(self._k * self._age_k * self.wear.k_mult, self._g * self._age_g * self.wear.g_mult,
                                self._dead | self._silent,
                                self._age_rth.copy(), self._airflow_scale())

    # -- faults (environment) -------------------------------------------------------------------------

    def _log(self, miner: int, kind: FaultKind, board: int | None, index: int | None, detail: str,
             injected: bool) -> None:
        self.events.append(FaultEvent(self.time, miner, kind, board, index, detail, injected))

    def schedule_failures(self, failures: list[Failure]) -> None:
        """Degradations and failures to happen at their times (``precursors.draw_failures``)."""
        self.wear = Wear(self.model, self.miners, failures, self.seed)

    def log_event(self, miner: int, kind: FaultKind, board: int | None, index: int | None, detail: str) -> None:
        self._log(miner, kind, board, index, detail, False)

    def kill_board(self, miner: int, board: int, detail: str = "") -> None:
        """A hashboard's chain stops answering: no nonces from any of its chips."""
        self._silent[miner, board] = True
        self._log(miner, FaultKind.BOARD_DEAD, board, None, detail or "chain lost", False)

    def kill_chip(self, miner: int, board: int, chip: int, *, injected: bool = True) -> None:
        """A chip fails: every hash it computes is wrong from now on (it still draws power)."""
        if not self._dead[miner, board, chip]:
            self._dead[miner, board, chip] = True
            self._log(miner, FaultKind.CHIP_DEAD, board, chip, "all hashes wrong, still drawing power", injected)

    def drop_domain(self, miner: int, board: int, domain: int, *, injected: bool = True) -> None:
        """A voltage domain's chips stop answering: no nonces, no errors; the string current still flows."""
        per = self.model.chips_per_board // self.model.domains
        chips = slice(domain * per, (domain + 1) * per)
        self._silent[miner, board, chips] = True
        self._log(miner, FaultKind.DOMAIN_DROP, board, domain, f"chips {domain * per}-{(domain + 1) * per - 1} silent",
                  injected)

    def wear_fan(self, miner: int, fan: int, days: float | None = None, *, injected: bool = True) -> None:
        """A fan bearing starts to wear: speed and airflow fall to 30 % over ``days`` simulated days."""
        span = (days or self.realism.faults.fan_wear_days) * 86400.0
        self._fan_wear_per_s[miner, fan] = 0.7 / span
        self._log(miner, FaultKind.FAN_WEAR, None, fan, f"losing speed over {span / 86400:.1f} days", injected)

    def stop_fan(self, miner: int, fan: int, *, injected: bool = True) -> None:
        self.fan_failed[miner, fan] = True
        self._log(miner, FaultKind.FAN_STOP, None, fan, "0 rpm, no airflow", injected)

    def stick_sensor(self, miner: int, board: int, sensor: int, *, injected: bool = True) -> None:
        """A chip-temperature sensor keeps reporting its present value."""
        idx = self._sensor_chips()[sensor]
        self._stuck[miner, board, sensor] = True
        self._stuck_value[miner, board, sensor] = self.t_j[miner, board, idx]
        self._log(miner, FaultKind.SENSOR_STUCK, board, sensor,
                  f"stuck at {self._stuck_value[miner, board, sensor]:.1f} C", injected)

    def _random_faults(self, dt: float) -> None:
        years = dt * self.realism.fault_speedup / SECONDS_PER_YEAR
        rates, rng, m = self.realism.faults, self._faults, self.model
        accel = np.exp(self.realism.ageing.activation_ev / BOLTZMANN_EV * (1 / AGEING_REF_K - 1 / (self.t_j + 273.15)))
        running = self.board_enabled[..., None] & (self._freq_run > 0)
        die = running & ~self._dead & (rng.random(self._dead.shape) < rates.chip_death * years * accel)
        for mi, b, c in np.argwhere(die):
            self.kill_chip(int(mi), int(b), int(c), injected=False)
        drops = self.board_enabled & (rng.random(self.board_enabled.shape) < rates.domain_drop * years)
        for mi, b in np.argwhere(drops):
            self.drop_domain(int(mi), int(b), int(rng.integers(m.domains)), injected=False)
        wear = (self._fan_wear_per_s == 0) & (rng.random(self.fan_health.shape) < rates.fan_wear * years)
        for mi, f in np.argwhere(wear):
            self.wear_fan(int(mi), int(f), rates.fan_wear_days / max(self.realism.fault_speedup, 1.0), injected=False)
        stick = ~self._stuck & (rng.random(self._stuck.shape) < rates.sensor_stuck * years)
        for mi, b, s in np.argwhere(stick):
            self.stick_sensor(int(mi), int(b), int(s), injected=False)

    # -- controls -----------------------------------------------------------------------------------

    def _snap_f(self, mhz: Array) -> Array:
        return snap_nearest(self._grid, mhz) if self.grid else mhz

    def snap_voltage(self, volts: float) -> float:
        lo, _ = self.model.voltage_range
        if not self.realism.pll_grid:
            return volts
        return lo + round((volts - lo) / self.model.volt_step) * self.model.volt_step

    def set_board_voltage(self, miner: int, board: int, volts: float) -> None:
        lo, hi = self.model.voltage_range
        if not lo - 1e-9 <= volts <= hi + 1e-9:
            raise ValueError(f"board voltage {volts:.3f} V outside {lo:.2f}-{hi:.2f} V for {self.model.name}")
        self.v_board[miner, board] = min(max(self.snap_voltage(volts), lo), hi)

    def set_frequency(self, miner: int, board: int, chip: int | slice, mhz: float | Array) -> None:
        values = np.asarray(mhz, dtype=np.float64)
        if np.any(~np.isfinite(values)) or np.any((values != 0) & ((values < self.model.min_freq_mhz) |
                                                                   (values > self.model.max_freq_mhz))):
            raise ValueError(f"frequency outside {self.model.min_freq_mhz:.0f}-{self.model.max_freq_mhz:.0f} MHz"
                             " (0 disables a chip)")
        self.freq[miner, board, chip] = self._snap_f(np.atleast_1d(values)).reshape(values.shape)

    def set_fan_duty(self, miner: int, duty: float) -> None:
        if not 0.0 <= duty <= 1.0:
            raise ValueError("fan duty must be within 0..1")
        self.duty[miner] = duty

    # -- physics ------------------------------------------------------------------------------------

    def _effective_freq(self) -> Array:
        return np.where(self.board_enabled[..., None], self._freq_run, 0.0)

    def _airflow_scale(self) -> Array:
        return np.asarray(np.maximum((self.fan_health * ~self.fan_failed).mean(axis=1), 0.05))

    def f_crit(self) -> Array:
        return physics.critical_frequency(self.model.chip, self._k * self._age_k * self.wear.k_mult, self._v_chip,
                                          self.t_j)

    def error_fraction(self) -> Array:
        if self._p is None:
            p = physics.error_fraction(self.model.chip, self._freq_run, self.f_crit())
            self._p = np.where(self._dead | self._silent, 1.0, p)
        return self._p

    def _settle(self, dt: float) -> None:
        if not self.realism.settling:
            self._freq_run, self._v_run = self.freq.copy(), self.v_board.copy()
            return
        # Up in ramp steps (drivers avoid current surges); down at once (always safe).  [A]
        step_f = self.model.chip.pll_ramp_mhz_s * dt
        ramped = np.minimum(self.freq, self._freq_run + step_f)
        self._freq_run = np.where(self._freq_run == 0, self.freq, ramped)
        step_v = self.model.vr_slew_v_s * dt
        self._v_run = self._v_run + np.clip(self.v_board - self._v_run, -step_v, step_v)

    def step(self, dt: float) -> None:
        """Advance the model by ``dt`` simulated seconds (exact exponential relaxation: any dt is stable)."""
        model, chip = self.model, self.model.chip
        if self.realism.inlet is not None:
            self.t_inlet[:] = self.realism.inlet.at(self.time + dt / 2)
        self._settle(dt)
        freq = self._effective_freq()
        g = self._g * self._age_g * self.wear.g_mult
        board_prev = self.chip_w.sum(axis=-1, keepdims=True)
        self._v_chip = physics.string_voltage(model, self._v_run[..., None], board_prev) / model.domains \
            * self.wear.v_mult
        # A disabled board has its supply cut: no dynamic and no leakage power.
        self.chip_w = physics.chip_power(chip, freq, self._v_chip, g, self.t_j) * self.board_enabled[..., None]
        board_w = self.chip_w.sum(axis=-1, keepdims=True)
        flow = self._airflow_scale()
        m_cp = physics.airflow_kg_s(model, self.duty * flow)[:, None, None] * physics.CP_AIR
        t_air = self.t_inlet[:, None, None] + physics.chip_positions(model) * board_w / m_cp
        rth = physics.r_th(chip, self.duty)[:, None, None] * (self._age_rth * self.wear.rth_mult)[..., None]
        a_sink = 1.0 - np.exp(-dt / TAU_SINK_S)
        a_j = 1.0 - np.exp(-dt / TAU_JUNCTION_S)
        self.t_sink += (t_air + (1 - JUNCTION_SHARE) * rth * self.chip_w - self.t_sink) * a_sink
        self.t_j += (self.t_sink + JUNCTION_SHARE * rth * self.chip_w - self.t_j) * a_j
        self._p = None
        hashes = physics.hashrate_ghs(chip, freq) * 1e9 * dt
        self.hashes += hashes
        if self.sample_counters:
            p = self.error_fraction()
            per_ticket = HASHES_PER_DIFF1 * self.ticket_difficulty
            answering = ~self._silent
            self.nonces += self._noise.poisson(hashes * (1 - p) / per_ticket) * answering
            self.errors += self._noise.poisson(hashes * p / per_ticket) * answering
        if self.realism.meter_errors:
            a_m = 1.0 - np.exp(-dt / model.meter_tau_s)
            self._meter_w = self._meter_w + (self.true_wall_power() - self._meter_w) * a_m
            self._meter_out_w = self._meter_out_w + (self.dc_power() - self._meter_out_w) * a_m
        if self.realism.ageing_speedup > 0:
            self._age(dt)
        if self.realism.fault_speedup > 0:
            self._random_faults(dt)
        self.fan_health = np.maximum(self.fan_health - self._fan_wear_per_s * dt, 0.3)
        self.time += dt
        self.wear.advance(self)

    def _age(self, dt: float) -> None:
        rates = self.realism.ageing
        years = dt * self.realism.ageing_speedup / SECONDS_PER_YEAR
        running = self.board_enabled[..., None] & (self._freq_run > 0)
        accel = np.exp(rates.activation_ev / BOLTZMANN_EV * (1 / AGEING_REF_K - 1 / (self.t_j + 273.15)))
        accel = np.where(running, accel, 0.0)
        self._age_k *= np.exp(-rates.k_loss * years * accel)
        self._age_g *= np.exp(rates.g_gain * years * accel)
        self._age_rth *= np.exp(rates.rth_gain * years * accel.mean(axis=-1))

    # -- readings (what hardware exposes) -------------------------------------------------------------

    def read_wall_power(self) -> Array:
        """PSU input power per miner, W: PMBus-style (lag, gain and offset error, noise, LINEAR11 steps)."""
        if not self.realism.meter_errors:
            true = self.true_wall_power()
            return np.asarray(true * (1 + POWER_NOISE * self._noise.standard_normal(self.miners)))
        noisy = self._meter_w * (1 + self.model.meter_noise * self._noise.standard_normal(self.miners))
        return linear11(noisy * self._meter_gain + self._meter_offset)

    def read_output_power(self, miner: int | slice = slice(None)) -> Array:
        """PSU output power (PMBus READ_POUT), W: the same lag, noise and LINEAR11 steps as the input reading,
        with its own gain and offset error (the output is sensed on the DC side, by another circuit)."""
        if not self.realism.meter_errors:
            dc = self.dc_power()[miner]
            return np.asarray(dc * (1 + POWER_NOISE * self._noise.standard_normal(np.shape(dc))))
        lagged = self._meter_out_w[miner]
        noisy = lagged * (1 + self.model.meter_noise * self._noise.standard_normal(np.shape(lagged)))
        return linear11(noisy * self._pout_gain[miner] + self._pout_offset[miner])

    def _sensor_chips(self) -> NDArray[np.int64]:
        n = self.model.sensors_per_board
        return np.asarray(np.linspace(0, self.model.chips_per_board - 1, n).round().astype(np.int64))

    def read_board_temps(self, miner: int | slice) -> tuple[Array, Array]:
        """(PCB sensors, chip-temperature sensors) per board, each (boards, sensors), with noise."""
        idx = self._sensor_chips()
        pcb = self.t_sink[miner][..., idx] - 3.0
        chips = self.t_j[miner][..., idx]
        noise = self._noise.standard_normal((2, *pcb.shape)) * SENSOR_NOISE_C
        chips = np.where(self._stuck[miner], self._stuck_value[miner], chips + noise[1])
        return pcb + noise[0], chips

    def read_fan_rpm(self, miner: int) -> list[int]:
        return [int(x) for x in self.read_fans(miner)]

    def read_fans(self, miner: int | slice = slice(None)) -> Array:
        """Fan speeds (rpm) per fan; a worn bearing turns slower and jitters, a stopped fan reads 0."""
        rpm = self.model.fan_max_rpm * np.asarray(self.duty[miner])[..., None]
        health, jitter = self.fan_health[miner], self.wear.fan_jitter[miner]
        noisy = rpm * health * (1 + jitter * self._noise.standard_normal(np.shape(health)))
        return np.asarray(np.where(self.fan_failed[miner], 0.0, np.floor(noisy + 0.5)))

    # -- modelled truth for benchmarks and reports --------------------------------------------------------

    def true_wall_power(self) -> Array:
        chips = (self.chip_w * self.board_enabled[..., None]).sum(axis=(1, 2))  # a board switched off draws nothing
        wall = physics.wall_power_w(self.model, chips, self.duty, self.t_inlet, self.wear.psu_loss)
        return np.asarray(np.where(self.wear.psu_failed, 0.0, wall))

    def dc_power(self) -> Array:
        """What the PSU delivers per miner (chips, fans, control board), W."""
        chips = (self.chip_w * self.board_enabled[..., None]).sum(axis=(1, 2))
        return np.asarray(chips + physics.fan_power_w(self.model, self.duty) + self.model.overhead_w)

    def string_voltage(self) -> Array:
        """Voltage reaching each board's chip string (miners, boards), V."""
        return physics.string_voltage(self.model, self._v_run, self.chip_w.sum(axis=-1))

    def valid_hashrate_ths(self) -> Array:
        """Modelled valid hashrate per miner (TH/s)."""
        ghs = physics.hashrate_ghs(self.model.chip, self._effective_freq()) * (1 - self.error_fraction())
        return np.asarray(ghs.sum(axis=(1, 2)) / 1000.0)

    def settle(self, seconds: float = 1800.0, dt: float = 30.0) -> None:
        """Run long enough for temperatures to reach steady state."""
        for _ in range(int(seconds / dt)):
            self.step(dt)

