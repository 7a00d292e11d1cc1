"""Failures that announce themselves: degradation before a fault, with its ground truth (all *modelled*).

How real hashboards fail, as repair shops describe it (public write-ups: d-central.tech "What are the Antminer
hardware errors" and "ASIC hardware failures", azic.pt "How hash boards work", theorangesignal.com "Hashboard
failure patterns"): an unstable chip's hardware-error rate climbs and its hashrate falls before it is replaced
or dies; a voltage regulator drifts out of specification (sag, ripple, heat) before its domain goes silent;
thermal cycling cracks solder and dries paste so a board runs hotter than its neighbours at the same power;
fan bearings lose speed and get noisy; PSU capacitors age (efficiency falls, output drifts) before a trip.
Other failures give no warning at all (a cracked trace, a surge, a sensor that freezes): a share of every
kind is drawn sudden, so a predictor's recall can be scored honestly.

``draw_failures`` pre-draws a schedule (component, onset of degradation, failure time) from ``PrecursorRates``;
``Wear`` holds the multipliers the fleet's physics reads (neutral when nothing degrades) and, stepped with the
fleet, moves them along each degradation and fires the failure at its time (logged in ``FleetSim.events``).
Shapes and rates are assumptions [A]; degradation speed does not depend on temperature here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from openmos.hw.sim.faults import FaultKind
from openmos.hw.sim.models import MinerModel
from openmos.hw.sim.physics import Array

if TYPE_CHECKING:
    from openmos.hw.sim.fleet import FleetSim

DAY_S = 86400.0
YEAR_S = 365.0 * DAY_S
VR_TEMP_OVER_SINK_C = 12.0  # the board's regulator runs this much above the heatsinks  [A]
VR_READ_NOISE_V = 0.003  # regulator output voltage reading noise  [A]
VR_BASE_RIPPLE = 0.0015  # healthy ripple, relative, as seen by a slow ADC  [A]
PSU_VOUT_NOISE_V = 0.01  # [A]
FAN_JITTER = 0.01  # healthy fan RPM reading noise, relative  [A]


class Mode(StrEnum):
    CHIP_WEAROUT = "chip_wearout"  # speed falls, leakage rises: errors and temperature creep, then dead
    CHIP_SUDDEN = "chip_sudden"
    BOARD_THERMAL = "board_thermal"  # paste/solder: thermal resistance rises, then the board drops out
    VR_DEGRADE = "vr_degrade"  # a domain's regulation sags with ripple and heat, then the domain drops
    DOMAIN_SUDDEN = "domain_sudden"
    FAN_BEARING = "fan_bearing"  # RPM at duty falls and jitters, then the fan seizes
    FAN_SUDDEN = "fan_sudden"
    PSU_AGEING = "psu_ageing"  # efficiency falls and the output drifts, then the PSU trips
    PSU_SUDDEN = "psu_sudden"
    SENSOR_STUCK = "sensor_stuck"  # never announced


COMPONENT = {Mode.CHIP_WEAROUT: "chip", Mode.CHIP_SUDDEN: "chip", Mode.BOARD_THERMAL: "board",
             Mode.VR_DEGRADE: "domain", Mode.DOMAIN_SUDDEN: "domain", Mode.FAN_BEARING: "fan",
             Mode.FAN_SUDDEN: "fan", Mode.PSU_AGEING: "psu", Mode.PSU_SUDDEN: "psu", Mode.SENSOR_STUCK: "sensor"}
FAULT = {Mode.CHIP_WEAROUT: FaultKind.CHIP_DEAD, Mode.CHIP_SUDDEN: FaultKind.CHIP_DEAD,
         Mode.BOARD_THERMAL: FaultKind.BOARD_DEAD, Mode.VR_DEGRADE: FaultKind.DOMAIN_DROP,
         Mode.DOMAIN_SUDDEN: FaultKind.DOMAIN_DROP, Mode.FAN_BEARING: FaultKind.FAN_STOP,
         Mode.FAN_SUDDEN: FaultKind.FAN_STOP, Mode.PSU_AGEING: FaultKind.PSU_TRIP, Mode.PSU_SUDDEN: FaultKind.PSU_TRIP,
         Mode.SENSOR_STUCK: FaultKind.SENSOR_STUCK}


@dataclass(frozen=True)
class PrecursorRates:
    """Failures per component-year [A], and how long each kind degrades before it fails (days, uniform)."""

    chip_wearout: float = 0.0015  # per chip
    chip_sudden: float = 0.0008
    board_thermal: float = 0.03  # per board
    vr_degrade: float = 0.03  # per board
    domain_sudden: float = 0.02
    fan_bearing: float = 0.06  # per fan
    fan_sudden: float = 0.02
    psu_ageing: float = 0.04  # per miner
    psu_sudden: float = 0.03
    sensor_stuck: float = 0.01  # per chip-temperature sensor
    days: tuple[tuple[Mode, float, float], ...] = (
        (Mode.CHIP_WEAROUT, 3.0, 12.0), (Mode.BOARD_THERMAL, 7.0, 30.0), (Mode.VR_DEGRADE, 2.0, 10.0),
        (Mode.FAN_BEARING, 7.0, 30.0), (Mode.PSU_AGEING, 5.0, 20.0))


@dataclass(frozen=True)
class Failure:
    """Ground truth of one failure: where, when degradation began (= ``fail_s`` if sudden), when it fails."""

    mode: Mode
    miner: int
    board: int | None
    index: int | None  # chip, domain, fan or sensor
    onset_s: float
    fail_s: float

    @property
    def component(self) -> str:
        return COMPONENT[self.mode]

    @property
    def announced(self) -> bool:
        return self.fail_s > self.onset_s


def draw_failures(model: MinerModel, miners: int, horizon_s: float, rng: np.random.Generator,
                  rates: PrecursorRates | None = None, start_s: float = 0.0) -> list[Failure]:
    """Failures whose *failure time* falls in [start, start + horizon); their degradation may begin earlier
    (before ``start``: the unit was already degrading when the record begins)."""
    r = rates or PrecursorRates()
    years = horizon_s / YEAR_S
    B, C, D, F, S = model.boards, model.chips_per_board, model.domains, model.fans, model.sensors_per_board
    counts = {Mode.CHIP_WEAROUT: (r.chip_wearout, (B, C)), Mode.CHIP_SUDDEN: (r.chip_sudden, (B, C)),
              Mode.BOARD_THERMAL: (r.board_thermal, (B, 1)), Mode.VR_DEGRADE: (r.vr_degrade, (B, D)),
              Mode.DOMAIN_SUDDEN: (r.domain_sudden, (B, D)), Mode.FAN_BEARING: (r.fan_bearing, (1, F)),
              Mode.FAN_SUDDEN: (r.fan_sudden, (1, F)), Mode.PSU_AGEING: (r.psu_ageing, (1, 1)),
              Mode.PSU_SUDDEN: (r.psu_sudden, (1, 1)), Mode.SENSOR_STUCK: (r.sensor_stuck, (B, S))}
    span = {mode: (lo, hi) for mode, lo, hi in r.days}
    per_board = {Mode.VR_DEGRADE: D, Mode.DOMAIN_SUDDEN: D, Mode.SENSOR_STUCK: S}
    out: list[Failure] = []
    for mode, (rate, (nb, ni)) in counts.items():
        # Rates are per domain-board for VR/domains (a board's rate spread over its domains).
        per = rate / per_board.get(mode, 1)
        n = int(rng.poisson(per * years * miners * nb * ni))
        mi = rng.integers(0, miners, n)
        bi = rng.integers(0, nb, n)
        ii = rng.integers(0, ni, n)
        fail = start_s + rng.random(n) * horizon_s
        lo, hi = span.get(mode, (0.0, 0.0))
        onset = fail - rng.uniform(lo, hi, n) * DAY_S
        comp = COMPONENT[mode]
        for k in range(n):
            board = int(bi[k]) if comp in ("chip", "board", "domain", "sensor") else None
            index = int(ii[k]) if comp in ("chip", "domain", "fan", "sensor") else None
            out.append(Failure(mode, int(mi[k]), board, index, float(onset[k]), float(fail[k])))
    out.sort(key=lambda f: f.fail_s)
    return out


def _ramp(t: float, onset: Array, fail: Array) -> Array:
    return np.asarray(np.clip((t - onset) / np.maximum(fail - onset, 1.0), 0.0, 1.0))


class Wear:
    """Degradation multipliers the physics reads (shapes follow the fleet) and the schedule that moves them."""

    def __init__(self, model: MinerModel, miners: int, failures: list[Failure] | None = None, seed: int = 0) -> None:
        shape = (miners, model.boards, model.chips_per_board)
        self.k_mult = np.ones(shape)  # critical-frequency constant
        self.g_mult = np.ones(shape)  # leakage
        self.v_mult = np.ones(shape)  # chip voltage (a sagging domain)
        self.rth_mult = np.ones(shape[:2])  # board thermal resistance
        self.ripple = np.full(shape[:2], VR_BASE_RIPPLE)  # relative ripple seen on the regulator's output
        self.vr_heat_c = np.zeros(shape[:2])
        self.fan_jitter = np.full((miners, model.fans), FAN_JITTER)
        self.psu_loss = np.zeros(miners)  # efficiency points lost
        self.psu_drift = np.zeros(miners)  # relative output-voltage drift
        self.psu_failed = np.zeros(miners, dtype=bool)
        self.failures = sorted(failures or [], key=lambda f: f.fail_s)
        self._next = 0
        self._rng = np.random.default_rng(seed + 3_000_017)  # reading noise of the added sensors
        self._domain_chips = model.chips_per_board // model.domains

        def pick(*modes: Mode) -> list[Failure]:
            return [f for f in self.failures if f.mode in modes and f.announced]
        self._by_mode = {mode: pick(mode) for mode in (Mode.CHIP_WEAROUT, Mode.BOARD_THERMAL, Mode.VR_DEGRADE,
                                                       Mode.FAN_BEARING, Mode.PSU_AGEING)}
        self._arrays = {mode: (np.array([f.onset_s for f in fs]), np.array([f.fail_s for f in fs]),
                               np.array([f.miner for f in fs], dtype=np.int64),
                               np.array([f.board or 0 for f in fs], dtype=np.int64),
                               np.array([f.index or 0 for f in fs], dtype=np.int64))
                        for mode, fs in self._by_mode.items()}

    def advance(self, fleet: FleetSim) -> None:
        """Move every degradation to the fleet's time and fire the failures that are due."""
        t = fleet.time
        on, fail, m, b, i = self._arrays[Mode.CHIP_WEAROUT]
        if len(on):
            u = _ramp(t, on, fail)
            self.k_mult[m, b, i] = 1.0 - 0.15 * u**2
            self.g_mult[m, b, i] = 1.0 + 0.6 * u**2
        on, fail, m, b, _ = self._arrays[Mode.BOARD_THERMAL]
        if len(on):
            self.rth_mult[m, b] = 1.0 + 0.6 * _ramp(t, on, fail) ** 1.5
        on, fail, m, b, d = self._arrays[Mode.VR_DEGRADE]
        if len(on):
            u = _ramp(t, on, fail)
            for k in range(len(on)):
                chips = slice(int(d[k]) * self._domain_chips, (int(d[k]) + 1) * self._domain_chips)
                self.v_mult[m[k], b[k], chips] = 1.0 - 0.04 * u[k] ** 2
            self.ripple[m, b] = VR_BASE_RIPPLE + 0.02 * u
            self.vr_heat_c[m, b] = 20.0 * u
        on, fail, m, _, f = self._arrays[Mode.FAN_BEARING]
        if len(on):
            u = _ramp(t, on, fail)
            fleet.fan_health[m, f] = np.minimum(fleet.fan_health[m, f], 1.0 - 0.45 * u)
            self.fan_jitter[m, f] = FAN_JITTER + 0.06 * u
        on, fail, m, _, _ = self._arrays[Mode.PSU_AGEING]
        if len(on):
            u = _ramp(t, on, fail)
            self.psu_loss[m] = 0.05 * u**1.5
            self.psu_drift[m] = -0.04 * u
        while self._next < len(self.failures) and self.failures[self._next].fail_s <= t:
            self._fire(fleet, self.failures[self._next])
            self._next += 1

    def _fire(self, fleet: FleetSim, f: Failure) -> None:
        board, index = f.board or 0, f.index or 0
        detail = f"after {(f.fail_s - f.onset_s) / DAY_S:.1f} days of {f.mode.value}" if f.announced else "sudden"
        if f.component == "chip":
            fleet.kill_chip(f.miner, board, index, injected=False)
        elif f.component == "domain":
            fleet.drop_domain(f.miner, board, index, injected=False)
        elif f.component == "board":
            fleet.kill_board(f.miner, board, detail)
        elif f.component == "fan":
            fleet.stop_fan(f.miner, index, injected=False)
        elif f.component == "psu":
            self.psu_failed[f.miner] = True
            fleet.board_enabled[f.miner] = False
            fleet.log_event(f.miner, FaultKind.PSU_TRIP, None, None, detail)
        elif f.component == "sensor":
            fleet.stick_sensor(f.miner, board, index, injected=False)

    # -- readings of the added sensors (what a regulator and a PMBus PSU report) ----------------------------

    def read_vr(self, fleet: FleetSim, miner: int | slice = slice(None)) -> tuple[Array, Array]:
        """(regulator temperature C, regulator output V) per board: sag, ripple and heat of a failing VR show."""
        sink = fleet.t_sink[miner].mean(axis=-1)
        temp = sink + VR_TEMP_OVER_SINK_C + self.vr_heat_c[miner]
        v_out = fleet.string_voltage()[miner]
        sag = 1.0 - (1.0 - self.v_mult[miner]).mean(axis=-1)
        ripple = self.ripple[miner] * self._rng.standard_normal(np.shape(temp))
        volts = v_out * sag * (1 + ripple) + VR_READ_NOISE_V * self._rng.standard_normal(np.shape(temp))
        temp = temp + 0.5 * self._rng.standard_normal(np.shape(temp))
        on = fleet.board_enabled[miner]
        return np.asarray(temp), np.asarray(np.where(on, volts, 0.0))

    def read_psu(self, fleet: FleetSim, miner: int | slice = slice(None)) -> tuple[Array, Array]:
        """(PSU output V, PSU output W): the output drifts as the PSU ages; both read 0 once it tripped.
        The output power carries the PSU's READ_POUT errors (``FleetSim.read_output_power``)."""
        v_set = fleet.v_board[miner].mean(axis=-1)
        volts = v_set * (1 + self.psu_drift[miner]) + PSU_VOUT_NOISE_V * self._rng.standard_normal(np.shape(v_set))
        out_w = fleet.read_output_power(miner)
        dead = self.psu_failed[miner]
        return np.asarray(np.where(dead, 0.0, volts)), np.asarray(np.where(dead, 0.0, out_w))
