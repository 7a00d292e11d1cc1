"""``SimHardware``: one simulated miner behind the hardware interface the agent uses.

Two things happen side by side. The physical model steps in simulated time and drives everything that
hardware would report -- hash and nonce counters, temperatures, fan RPM, input power -- all *modelled*, and
telemetry says so. Shares, on the other hand, must be real: a CPU hashing backend really searches the
work the agent hands out, and only nonces it actually found are reported, each attributed to a chip in
proportion to that chip's modelled valid rate. A nonce from a chip the model says is erroring is corrupted
on the way, so the agent's re-validation sees hardware errors where the model has them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from openmos.base.tasks import cancel_and_wait
from openmos.hw.cpu import CpuHardware, CpuSettings
from openmos.hw.interface import (
    BoardTelemetry,
    ChipTelemetry,
    FanTelemetry,
    HardwareLimits,
    HardwareTelemetry,
    MiningHardware,
    NonceSink,
    WorkProvider,
)
from openmos.hw.sim.clock import SimClock
from openmos.hw.sim.faults import FaultEvent
from openmos.hw.sim.fleet import FleetSim, meter_rng
from openmos.hw.sim.models import MinerModel, get_model
from openmos.hw.sim.pll import pll_grid
from openmos.hw.sim.realism import Realism
from openmos.hw.work import NonceResult

MAX_SUBSTEP_S = 5.0


def limits_for(m: MinerModel, realism: Realism | None = None) -> HardwareLimits:
    """What firmware knows of a simulated model (its public data), for every simulated hardware view:
    the PLL grid and supply steps, how long a change takes to show, the PSU rating."""
    lo, hi = m.voltage_range
    real = realism or Realism()
    settle = 3 * m.meter_tau_s + 1.0 if real.settling or real.meter_errors else 0.0
    grid = pll_grid(m.chip, m.min_freq_mhz, m.max_freq_mhz) if real.pll_grid else ()
    return HardwareLimits(m.boards, m.chips_per_board, m.fans, m.min_freq_mhz, m.max_freq_mhz, 6.25,
                          m.stock_freq_mhz, lo, hi, m.volt_step if real.pll_grid else 0.02,
                          m.stock_board_voltage, m.chip.cores * 1e6, m.nameplate_w,
                          freq_grid_mhz=grid, settle_s=settle, psu_max_w=m.psu_max_w)


class SimHardware(MiningHardware):
    def __init__(self, model: str, *, seed: int = 0, clock: SimClock | None = None, t_inlet: float = 25.0,
                 hash_workers: int = 1, tick_s: float = 0.5, realism: Realism | None = None) -> None:
        self._fleet = FleetSim(get_model(model), miners=1, seed=seed, t_inlet=t_inlet, realism=realism)
        self._model = self._fleet.model
        self.model = f"{self._model.name} (simulated)"
        self._clock = clock or SimClock(1.0)
        self._clock.on_advance(self.advance)
        self._tick_s = tick_s
        self._cpu = CpuHardware(CpuSettings(workers=hash_workers))
        self._rng = np.random.default_rng(seed + 7)
        self._task: asyncio.Task[None] | None = None
        self._last = 0.0
        self.real_nonces = 0
        self.corrupted_nonces = 0

    @property
    def clock(self) -> SimClock:
        return self._clock

    def fail_fan(self, index: int) -> None:
        """Environment: a fan stops (reads 0 rpm and moves no air)."""
        self._fleet.stop_fan(0, index)

    def drop_domain(self, board: int, domain: int) -> None:
        """Environment: a voltage domain's chips stop answering."""
        self._fleet.drop_domain(0, board, domain)

    def wear_fan(self, index: int, days: float | None = None) -> None:
        """Environment: a fan bearing starts to wear (speed falls over days)."""
        self._fleet.wear_fan(0, index, days)

    def stick_sensor(self, board: int, sensor: int) -> None:
        """Environment: a chip-temperature sensor freezes at its present reading."""
        self._fleet.stick_sensor(0, board, sensor)

    def fault_events(self) -> list[FaultEvent]:
        """Ground-truth fault log (for scoring maintenance tools; firmware must not read it)."""
        return list(self._fleet.events)

    async def start(self, provider: WorkProvider, sink: NonceSink) -> None:
        self._last = self._clock.now()
        self._task = asyncio.create_task(self._physics_loop(), name="sim-physics")
        await self._cpu.start(provider, lambda result: self._attribute(result, sink))

    async def stop(self) -> None:
        await self._cpu.stop()
        await cancel_and_wait(self._task)

    def advance(self) -> None:
        """Step the model up to the clock's current time."""
        now = self._clock.now()
        remaining = now - self._last
        while remaining > 1e-9:
            dt = min(remaining, MAX_SUBSTEP_S)
            self._fleet.step(dt)
            remaining -= dt
        self._last = now

    async def _physics_loop(self) -> None:
        while True:
            self.advance()
            await asyncio.sleep(self._tick_s)

    def _attribute(self, result: NonceResult, sink: NonceSink) -> None:
        """Give a really-found nonce to a chip, weighted by modelled nonce output; corrupt it if that chip errs."""
        fleet = self._fleet
        weights = (fleet.freq[0] * (fleet.board_enabled[0][:, None])).ravel()
        if weights.sum() <= 0:
            return  # every chip is off: the hardware found nothing
        flat = int(self._rng.choice(weights.size, p=weights / weights.sum()))
        board, chip = divmod(flat, self._model.chips_per_board)
        p_error = float(fleet.error_fraction()[0, board, chip])
        nonce = result.nonce
        self.real_nonces += 1
        if self._rng.random() < p_error:
            nonce ^= 1 << int(self._rng.integers(32))
            self.corrupted_nonces += 1
        sink(NonceResult(result.work_id, nonce, result.version, board, chip))

    # -- what hardware exposes ----------------------------------------------------------------------

    def telemetry(self) -> HardwareTelemetry:
        self.advance()  # the model is always read at the clock's current time
        f, m = self._fleet, self._model
        pcb, chip_t = f.read_board_temps(0)
        vr_t, vr_v = f.wear.read_vr(f, 0)
        psu_v, psu_w = f.wear.read_psu(f, 0)
        boards = []
        for b in range(m.boards):
            freq, nonces, errors, hashes = f.freq[0, b], f.nonces[0, b], f.errors[0, b], f.hashes[0, b]
            chips = [ChipTelemetry(c, float(freq[c]), int(nonces[c]), int(errors[c]), float(hashes[c]),
                                   bool(freq[c] > 0), f.ticket_difficulty) for c in range(m.chips_per_board)]
            boards.append(BoardTelemetry(b, chips, [float(t) for t in pcb[b]], [float(t) for t in chip_t[b]],
                                         float(f.v_board[0, b]), bool(f.board_enabled[0, b]), float(vr_t[b]),
                                         float(vr_v[b])))
        duty = float(f.duty[0]) * 100
        fans = [FanTelemetry(i, rpm, duty) for i, rpm in enumerate(f.read_fan_rpm(0))]
        return HardwareTelemetry(self.model, boards, fans, float(f.read_wall_power()[0]),
                                 m.nominal_ths, modelled=True, psu_output_w=float(psu_w), psu_output_v=float(psu_v))

    async def set_chip_frequency(self, board: int, chip: int, mhz: float) -> None:
        self.advance()  # what ran until now ran at the old setting
        self._fleet.set_frequency(0, board, chip, mhz)

    async def set_chip_frequencies(self, board: int, mhz: Sequence[float]) -> None:
        self.advance()
        self._fleet.set_frequency(0, board, slice(None), np.asarray(mhz, dtype=np.float64))

    async def set_board_voltage(self, board: int, volts: float) -> None:
        self.advance()  # what ran until now ran at the old setting
        self._fleet.set_board_voltage(0, board, volts)

    async def set_fan_duty(self, duty_pct: float) -> None:
        self.advance()  # what ran until now ran at the old setting
        self._fleet.set_fan_duty(0, duty_pct / 100.0)

    async def set_board_enabled(self, board: int, enabled: bool) -> None:
        self.advance()  # what ran until now ran at the old setting
        self._fleet.board_enabled[0, board] = enabled

    async def set_ticket_difficulty(self, difficulty: float) -> None:
        if not difficulty > 0:
            raise ValueError("ticket difficulty must be positive")
        self._fleet.ticket_difficulty = float(difficulty)

    def set_inlet_temperature(self, celsius: float) -> None:
        """Environment, not firmware: the air coming in (tests and benchmarks use it)."""
        self._fleet.t_inlet[0] = celsius

    def kill_chip(self, board: int, chip: int) -> None:
        """Environment: a chip fails."""
        self._fleet.kill_chip(0, board, chip)

    def expected_hashrate(self) -> float:
        """The real hashing behind the simulated chips' nonces (the CPU), not the modelled TH/s."""
        return self._cpu.expected_hashrate()

    def limits(self) -> HardwareLimits:
        return limits_for(self._model, self._fleet.realism)

    async def set_board_frequency(self, board: int, mhz: float) -> None:
        self.advance()  # what ran until now ran at the old setting
        self._fleet.set_frequency(0, board, slice(None), mhz)

    def wall_meter(self, accuracy: float = 0.002) -> SimWallMeter:
        """A modelled calibrated meter on this unit's circuit (a metering PDU outlet), for a tuner's reference."""
        return SimWallMeter(self, accuracy)

    def modelled_truth(self) -> tuple[float, float]:
        """(true wall power W, valid TH/s) from the model, for benchmark scoring only."""
        return float(self._fleet.true_wall_power()[0]), float(self._fleet.valid_hashrate_ths()[0])

    def oracle_view(self) -> FleetSim:
        """The underlying fleet, for the oracle in benchmarks and tests. Firmware code must not call this."""
        return self._fleet


class SimWallMeter:
    """Modelled reference meter: true wall power x a per-unit gain error uniform within +-``accuracy`` (its
    accuracy class: 0.002 for a class-0.2 revenue meter), with 0.1 % noise per reading. Modelled, not measured."""

    def __init__(self, hw: SimHardware, accuracy: float) -> None:
        self._hw = hw
        fleet = hw.oracle_view()
        self._rng = meter_rng(fleet.model.key, fleet.seed, "wall")
        self._gain = 1.0 + float(self._rng.uniform(-accuracy, accuracy))

    async def read_power_w(self) -> float:
        true_w = self._hw.modelled_truth()[0]
        return true_w * self._gain * (1.0 + 0.001 * float(self._rng.standard_normal()))
