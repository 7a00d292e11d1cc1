"""``MiningHardware`` over BM13xx chains on a board: job dispatch, nonce checking, telemetry, protection.

The board (``BoardControl``) owns power, reset, fan and sensors; each ``Chain`` owns one serial stream. The
backend rotates job slots, maps every nonce back to its work item and rolled version, re-hashes it once
(SHA-256d from a cached midstate) to charge chip errors and to forward only the nonces that meet the
work's target, and polls the board's sensors: a regulator fault powers the board down at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from openmos.base.tasks import cancel_all
from openmos.bitcoin import Midstate, difficulty_to_target, hash_to_int
from openmos.hw.bm13xx import protocol as p
from openmos.hw.bm13xx.chain import Chain, NonceHit
from openmos.hw.bm13xx.chip import RAMP_STEP_MHZ, ChipType
from openmos.hw.interface import (
    BoardTelemetry,
    ChipTelemetry,
    FanTelemetry,
    HardwareLimits,
    HardwareTelemetry,
    MiningHardware,
    NonceSink,
    UnsupportedControl,
    WorkProvider,
)
from openmos.hw.transport.patience import MissStreak
from openmos.hw.work import NonceResult, WorkItem

log = logging.getLogger(__name__)


@dataclass
class BoardSensors:
    board_temps_c: list[float] = field(default_factory=list)
    chip_temps_c: list[float] = field(default_factory=list)
    vout_v: float | None = None
    iout_a: float | None = None
    vin_v: float | None = None
    fan_rpm: int | None = None
    fan_duty_pct: float | None = None
    faults: list[str] = field(default_factory=list)  # regulator / board faults: any one powers the board off

    @property
    def power_w(self) -> float | None:
        return self.vout_v * self.iout_a if self.vout_v is not None and self.iout_a is not None else None


class BoardControl(Protocol):
    """Power, reset, cooling and sensors of one board (its chains' streams are opened by the board too)."""

    name: str

    async def open(self) -> list[Chain]:
        """Power up, release reset, bring up the I2C parts; return the board's chains (not yet enumerated)."""
        ...

    async def close(self) -> None:
        """Hold the chips in reset, switch the regulator off, release the ports."""
        ...

    async def emergency_off(self, why: str) -> None:
        """Fastest safe state: chips in reset, regulator off, fans full."""
        ...

    async def sensors(self) -> BoardSensors: ...

    async def set_voltage(self, volts: float) -> None: ...

    async def set_fan(self, duty_pct: float) -> None: ...

    async def set_power(self, on: bool) -> None:
        """Off: chips held in reset and the regulator off, ports and sensors kept. On: the reverse (chips
        come back unaddressed at their reset baud and frequency)."""
        ...


@dataclass(frozen=True)
class Bm13xxSettings:
    chip: ChipType
    chips: int | None = None  # expected per chain (a mismatch is logged)
    frequency_mhz: float | None = None  # None: the chip type's stock frequency
    voltage: float | None = None
    ticket_difficulty: float = 256.0
    job_interval_s: float = 1.0  # a fresh job this often (and at once on a new block)
    poll_s: float = 0.25  # sensor poll: bounds the reaction to a regulator fault
    counters_s: float = 5.0
    # Counter reads on a loaded host: a chip silent for read_timeout_s is asked again (each wait doubled) up to
    # read_retries times, and counts as not responding only after read_miss_limit such reads in a row.
    read_timeout_s: float = 0.5
    read_retries: int = 2
    read_miss_limit: int = 3
    ramp_step_s: float = 0.1
    baud: int | None = None  # switch the chain to this UART rate after enumeration
    diff1_shift: int = 0  # emulator only: its chips treat difficulty 1 as 2**-diff1_shift
    enumerate_quiet_s: float = 0.5


@dataclass
class _Job:
    work: WorkItem
    midstates: dict[int, Midstate] = field(default_factory=dict)
    head: bytes = b""
    tail12: bytes = b""

    def __post_init__(self) -> None:
        raw = self.work.header.serialize()
        self.head, self.tail12 = raw[4:64], raw[64:76]


@dataclass
class _ChipCounters:
    nonces: int = 0
    errors: int = 0  # nonces that failed the ticket check, plus agent-reported errors
    chip_errors: int = 0  # from the chip's own error counter (delta since start)
    counted_hashes: float = 0.0  # from the hash counter


@dataclass
class Bm13xxStats:
    stale_nonces: int = 0  # for a job slot that holds no work (or was reused)
    version_errors: int = 0
    jobs_sent: int = 0
    emergency_stops: int = 0
    last_fault: str = ""
    nonce_seconds: float = 0.0  # driver CPU time spent on nonces
    sensor_misses: int = 0  # sensor polls that failed (reported only after read_miss_limit in a row)


class Bm13xxHardware(MiningHardware):
    def __init__(self, board: BoardControl, settings: Bm13xxSettings, model: str | None = None) -> None:
        self.board = board
        self.settings = settings
        self.model = model or f"{board.name} ({settings.chip.name})"
        self.chains: list[Chain] = []
        self.stats = Bm13xxStats()
        self._counters: list[list[_ChipCounters]] = []
        self._jobs: list[dict[int, _Job]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._sink: NonceSink | None = None
        self._sensors = BoardSensors()
        self._ticket_target = 0
        self._stopped = asyncio.Event()
        self._provider: WorkProvider | None = None
        self.powered = False

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self, provider: WorkProvider, sink: NonceSink) -> None:
        await self.bring_up()
        self._sink = sink
        self._provider = provider
        self._stopped.clear()
        self._tasks = [asyncio.create_task(self._monitor_loop(), name="bm13xx-monitor"),
                       asyncio.create_task(self._counters_loop(), name="bm13xx-counters")]
        self._start_jobs()

    def _start_jobs(self) -> None:
        assert self._provider is not None
        self._tasks += [asyncio.create_task(self._job_loop(i, self._provider), name=f"bm13xx-jobs-{i}")
                        for i in range(len(self.chains))]

    async def _init_chain(self, index: int, chain: Chain, frequencies: Sequence[float] | float,
                          ticket: int) -> None:
        """Enumerate, configure, switch baud and ramp one chain (after power-up or a reset)."""
        s = self.settings
        chain.on_nonce = lambda hit: self._on_nonce(index, hit)
        chain.miss_limit = max(1, s.read_miss_limit)
        await chain.enumerate(expected=s.chips, quiet_s=s.enumerate_quiet_s)
        chain.ticket_difficulty = ticket
        await chain.configure(version_mask=0x1FFFE000)
        if s.baud:
            await chain.set_baud(s.baud)
        await chain.set_frequencies(frequencies, step_delay_s=s.ramp_step_s)

    async def bring_up(self) -> None:
        s = self.settings
        chains = await self.board.open()
        self.powered = True
        try:
            for i, chain in enumerate(chains):
                await self._init_chain(i, chain, s.frequency_mhz or s.chip.stock_mhz,
                                       int(max(1, s.ticket_difficulty)))
        except BaseException:
            self.powered = False
            await self.board.close()
            raise
        self.chains = chains
        self._counters = [[_ChipCounters() for _ in c.chips] for c in chains]
        self._jobs = [{} for _ in chains]
        self._update_ticket_target()
        if s.voltage is not None:
            await self.board.set_voltage(s.voltage)
        try:  # sensors known from the start: the agent decides from them whether a safety monitor runs
            self._sensors = await self.board.sensors()
        except Exception as exc:
            log.warning("%s: first sensor read failed: %s", self.model, exc)
        freqs = ", ".join(f"{c.chips[0].frequency_mhz:g}" for c in chains)
        log.info("%s up: %d chain(s), %s chips, %s MHz", self.model, len(chains),
                 "+".join(str(len(c.chips)) for c in chains), freqs)

    async def stop(self) -> None:
        self._stopped.set()
        await cancel_all(self._tasks)
        self._tasks = []
        for chain in self.chains:
            await chain.close()
        self.powered = False
        await self.board.close()  # chips in reset, regulator off, ports released (also after an emergency stop)

    # -- jobs ---------------------------------------------------------------------------------------

    async def _job_loop(self, index: int, provider: WorkProvider) -> None:
        chain = self.chains[index]
        jobs = self._jobs[index]
        while not self._stopped.is_set():
            work = provider.next_work()
            if work is None:
                await asyncio.sleep(0.1)
                continue
            slot = chain.next_slot()
            jobs[slot] = _Job(work)
            h = work.header
            await chain.send(chain.job_frame(slot, version=h.version, prev_hash=h.prev_hash,
                                             merkle_root=h.merkle_root, ntime=h.ntime, nbits=h.bits))
            self.stats.jobs_sent += 1
            deadline = time.monotonic() + self.settings.job_interval_s
            while time.monotonic() < deadline and provider.generation == work.generation:
                await asyncio.sleep(min(0.05, self.settings.job_interval_s))

    def _update_ticket_target(self) -> None:
        ticket = self.chains[0].ticket_difficulty if self.chains else 1
        self._ticket_target = difficulty_to_target(ticket * 2.0 ** -self.settings.diff1_shift)

    def _on_nonce(self, index: int, hit: NonceHit) -> None:
        began = time.process_time()
        try:
            self._check_nonce(index, hit)
        finally:
            self.stats.nonce_seconds += time.process_time() - began

    def _check_nonce(self, index: int, hit: NonceHit) -> None:
        job = self._jobs[index].get(hit.slot) if index < len(self._jobs) else None
        if job is None:
            self.stats.stale_nonces += 1
            return
        counters = self._counters[index][hit.chip]
        work = job.work
        version = work.header.version | hit.version_bits
        if (version ^ work.header.version) & ~work.version_mask & 0xFFFFFFFF:
            self.stats.version_errors += 1
            counters.errors += 1
            return
        mid = job.midstates.get(version)
        if mid is None:
            if len(job.midstates) >= 64:
                job.midstates.clear()
            mid = job.midstates[version] = Midstate.of(version.to_bytes(4, "little") + job.head)
        value = hash_to_int(mid.hash_tail(job.tail12 + hit.nonce.to_bytes(4, "little")))
        if value > self._ticket_target:
            # Below the ticket mask: a corrupted nonce, a nonce for a job this slot held earlier, or a bad core.
            counters.errors += 1
            return
        counters.nonces += 1
        if value <= work.target and self._sink is not None:
            self._sink(NonceResult(work.work_id, hit.nonce, version, index, hit.chip))

    # -- monitoring ---------------------------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        """Sensors every poll_s: a regulator fault powers the board off. Nothing slow runs here (the chips'
        counters have their own loop, whose retries may take seconds)."""
        s = self.settings
        misses = MissStreak(s.read_miss_limit)
        while not self._stopped.is_set():
            try:
                sensors = await self.board.sensors()
            except Exception as exc:  # a failed sensor read must not kill the monitor
                self.stats.sensor_misses += 1
                if misses.miss():
                    log.warning("%s: sensor read failed %d times in a row (last: %s); check the board's control "
                                "connection", self.model, misses.in_a_row, exc)
                else:
                    log.debug("%s: sensor read failed (%d in a row): %s", self.model, misses.in_a_row, exc)
                await asyncio.sleep(s.poll_s)
                continue
            if misses.hit():
                log.info("%s: sensors answer again", self.model)
            self._sensors = sensors
            if sensors.faults:
                await self.emergency_stop("regulator fault: " + ", ".join(sensors.faults))
                return
            await asyncio.sleep(s.poll_s)

    async def _counters_loop(self) -> None:
        while not self._stopped.is_set():
            await asyncio.sleep(self.settings.counters_s)
            if self.powered:
                await self._read_counters()

    async def emergency_stop(self, why: str) -> None:
        self.stats.emergency_stops += 1
        self.stats.last_fault = why
        log.critical("%s: %s -- chips held in reset, regulator off, fans full. Power-cycle the board after "
                     "finding the cause (see the regulator's status in `mos run` logs).", self.model, why)
        self._stopped.set()
        await self.board.emergency_off(why)
        self.powered = False
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def _read_counters(self) -> None:
        unit = 2.0 ** (32 - self.settings.diff1_shift)
        for index, chain in enumerate(self.chains):
            before = [(c.hash_count, c.error_count) for c in chain.chips]
            await chain.read_counters(timeout_s=self.settings.read_timeout_s, retries=self.settings.read_retries)
            for chip, (hc, ec) in zip(chain.chips, before, strict=True):
                counters = self._counters[index][chip.index]
                if hc is not None and chip.hash_count is not None:
                    counters.counted_hashes += ((chip.hash_count - hc) & 0xFFFFFFFF) * unit
                if ec is not None and chip.error_count is not None:
                    counters.chip_errors += (chip.error_count - ec) & 0xFFFFFFFF

    # -- telemetry and control ----------------------------------------------------------------------

    def telemetry(self) -> HardwareTelemetry:
        s = self._sensors
        real_ticket = (self.chains[0].ticket_difficulty if self.chains else 1) * 2.0 ** -self.settings.diff1_shift
        boards = []
        for index, chain in enumerate(self.chains):
            chips = []
            for chip in chain.chips:
                c = self._counters[index][chip.index]
                hashes = c.counted_hashes or c.nonces * real_ticket * 2.0 ** 32
                chips.append(ChipTelemetry(chip.index, chip.frequency_mhz, c.nonces, c.errors + c.chip_errors,
                                           hashes, chip.responding and self.powered, real_ticket))
            boards.append(BoardTelemetry(index, chips, list(s.board_temps_c), list(s.chip_temps_c), s.vout_v,
                                         self.powered))
        fans = [FanTelemetry(0, s.fan_rpm, s.fan_duty_pct or 0.0)] if s.fan_rpm is not None else []
        nominal = sum(self.settings.chip.hashrate_ghs(c.frequency_mhz) for ch in self.chains for c in ch.chips)
        return HardwareTelemetry(self.model, boards, fans, s.power_w, nominal / 1000.0)

    def record_error(self, board: int, chip: int) -> None:
        if 0 <= board < len(self._counters) and 0 <= chip < len(self._counters[board]):
            self._counters[board][chip].errors += 1

    def quantise_frequency(self, mhz: float) -> float:
        """The PLL grid frequency a request for ``mhz`` becomes."""
        return self.settings.chip.quantise(mhz)

    async def set_chain_frequencies(self, board: int, mhz: Sequence[float]) -> list[float]:
        """One batch call for a whole chain (ramped, all chips per step in one write)."""
        return await self.chains[board].set_frequencies(mhz, step_delay_s=self.settings.ramp_step_s)

    async def set_board_frequency(self, board: int, mhz: float) -> None:
        await self.set_chain_frequencies(board, [mhz] * len(self.chains[board].chips))

    async def set_chip_frequencies(self, board: int, mhz: Sequence[float]) -> None:
        await self.set_chain_frequencies(board, mhz)  # a tuner plan: one ramp, not one per chip

    async def set_chip_frequency(self, board: int, chip: int, mhz: float) -> None:
        chain = self.chains[board]
        targets = [c.frequency_mhz for c in chain.chips]
        targets[chip] = mhz
        await self.set_chain_frequencies(board, targets)

    async def set_board_voltage(self, board: int, volts: float) -> None:
        lo, hi = self.settings.chip.volt_range
        if not lo <= volts <= hi:
            raise ValueError(f"{self.settings.chip.name} core voltage must be within {lo}..{hi} V, got {volts!r}")
        await self.board.set_voltage(volts)

    async def set_fan_duty(self, duty_pct: float) -> None:
        if not 0.0 <= duty_pct <= 100.0:
            raise ValueError(f"fan duty must be 0..100 %, got {duty_pct!r}")
        await self.board.set_fan(duty_pct)

    async def set_board_enabled(self, board: int, enabled: bool) -> None:
        """Switch the board's power (all its chains): off holds the chips in reset with the regulator off and
        keeps reading the sensors; on powers up, re-enumerates and ramps back to the last frequencies."""
        if not 0 <= board < max(1, len(self.chains)):
            raise ValueError(f"{self.model} has one board (0), not {board!r}")
        if self._provider is None or self._stopped.is_set():
            raise UnsupportedControl(f"{self.model} is not running (stopped or emergency-stopped)")
        if enabled == self.powered:
            return
        if not enabled:
            self.powered = False
            jobs = [t for t in self._tasks if t.get_name().startswith("bm13xx-jobs")]
            self._tasks = [t for t in self._tasks if t not in jobs]
            await cancel_all(jobs)
            await self.board.set_power(False)
            for jobs_of_chain in self._jobs:
                jobs_of_chain.clear()
            log.warning("%s: powered off (chips in reset, regulator off)", self.model)
            return
        await self.board.set_power(True)
        self.powered = True
        for i, chain in enumerate(self.chains):
            freqs = [c.frequency_mhz or self.settings.chip.stock_mhz for c in chain.chips]
            if self.settings.baud:
                chain.stream.set_baud(p.DEFAULT_BAUD)  # the chips came out of reset at their default rate
            await self._init_chain(i, chain, freqs, chain.ticket_difficulty)
        self._start_jobs()
        log.info("%s: powered on again, %s MHz", self.model,
                 ", ".join(f"{c.frequency_mhz:g}" for ch in self.chains for c in ch.chips))

    async def set_ticket_difficulty(self, difficulty: float) -> None:
        # The agent speaks real difficulty; the chips' unit is 2**-diff1_shift of it on the emulator.
        chip_units = max(1.0, float(difficulty) * 2.0 ** self.settings.diff1_shift)
        for chain in self.chains:
            await chain.set_ticket_difficulty(chip_units)
        self._update_ticket_target()

    def limits(self) -> HardwareLimits:
        c = self.settings.chip
        return HardwareLimits(boards=max(1, len(self.chains)),
                              chips_per_board=max([len(ch.chips) for ch in self.chains] or [self.settings.chips or 1]),
                              fans=1, freq_min_mhz=c.freq_range_mhz[0], freq_max_mhz=c.freq_range_mhz[1],
                              freq_step_mhz=RAMP_STEP_MHZ, stock_freq_mhz=c.stock_mhz, volt_min=c.volt_range[0],
                              volt_max=c.volt_range[1], volt_step=0.005, stock_voltage=c.stock_voltage,
                              hashes_per_mhz=c.small_cores * 1000.0, freq_grid_mhz=c.grid_mhz,
                              settle_s=self.settings.ramp_step_s * 4 + self.settings.counters_s)
