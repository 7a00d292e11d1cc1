"""The hardware interface every backend implements, and the telemetry it exposes.

Telemetry holds only what real hardware can report. Backends whose numbers are modelled rather than
measured (the simulator) say so through ``HardwareTelemetry.modelled``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from openmos.base.clock import Clock, WallClock
from openmos.control.errors import UnsupportedControl as UnsupportedControl  # what a backend raises for "cannot"
from openmos.hw.work import NonceResult, WorkItem


class WorkProvider(Protocol):
    """Where hardware pulls work from (the agent)."""

    @property
    def generation(self) -> int: ...

    def next_work(self) -> WorkItem | None:
        """A fresh, unique work item, or None when there is no job to mine yet."""
        ...


NonceSink = Callable[[NonceResult], None]


@dataclass
class ChipTelemetry:
    index: int
    frequency_mhz: float | None
    nonces: int = 0  # valid nonces reported by the chip
    errors: int = 0  # nonces that failed re-validation, or the chip's own error counter
    hashes: float = 0.0  # hashes done, from the chip's hash counter where it has one
    enabled: bool = True
    ticket_difficulty: float = 1.0  # each reported nonce stands for this many difficulty-1 shares


@dataclass
class BoardTelemetry:
    index: int
    chips: list[ChipTelemetry]
    temperatures_c: list[float] = field(default_factory=list)  # PCB sensors, inlet side first
    chip_temperatures_c: list[float] = field(default_factory=list)  # chip (die) sensors where the board has them
    voltage_v: float | None = None
    enabled: bool = True
    vr_temperature_c: float | None = None  # the board's voltage regulator, where it reports one
    vr_voltage_v: float | None = None  # the regulator's measured output (not the set-point)

    @property
    def hashes(self) -> float:
        return sum(c.hashes for c in self.chips)


@dataclass
class FanTelemetry:
    index: int
    rpm: int
    duty_pct: float


@dataclass
class HardwareTelemetry:
    model: str
    boards: list[BoardTelemetry]
    fans: list[FanTelemetry] = field(default_factory=list)
    input_power_w: float | None = None
    nominal_hashrate_ths: float | None = None
    modelled: bool = False  # True when hashrate/power/temperatures come from a model, not sensors
    psu_output_w: float | None = None  # PMBus PSUs report their output too: efficiency = output / input
    psu_output_v: float | None = None

    @property
    def hashes(self) -> float:
        return sum(b.hashes for b in self.boards)


@dataclass(frozen=True)
class HardwareLimits:
    """What firmware knows about its hardware from the model's public data (EEPROM / datasheet)."""

    boards: int
    chips_per_board: int
    fans: int
    freq_min_mhz: float
    freq_max_mhz: float
    freq_step_mhz: float
    stock_freq_mhz: float
    volt_min: float  # per board
    volt_max: float
    volt_step: float
    stock_voltage: float
    hashes_per_mhz: float  # hashes per second per MHz per chip (small cores)
    nameplate_power_w: float | None = None
    freq_grid_mhz: tuple[float, ...] = ()  # frequencies the PLL can make, ascending (empty: any, in freq_step)
    settle_s: float = 0.0  # after a change, how long until counters and power show it (PLL, VR slew, meter)
    psu_max_w: float | None = None  # rated PSU output at the wall


class MiningHardware(abc.ABC):
    """One miner's worth of hashing hardware."""

    model: str = "unknown"

    @abc.abstractmethod
    async def start(self, provider: WorkProvider, sink: NonceSink) -> None:
        """Begin pulling work from ``provider`` and pushing nonces into ``sink``."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop hashing and release the hardware."""

    @abc.abstractmethod
    def telemetry(self) -> HardwareTelemetry:
        """A snapshot of counters and sensors."""

    def hash_count(self) -> float:
        """Hashes done so far by every chip (their hash counters): what the agent's hashrate estimate reads
        every second. Backends that can read the counters alone override this (a whole snapshot costs more)."""
        return self.telemetry().hashes

    def record_error(self, board: int, chip: int) -> None:  # noqa: B027 - optional hook
        """The agent found a nonce from this chip invalid (a hardware error)."""

    async def set_chip_frequency(self, board: int, chip: int, mhz: float) -> None:
        raise UnsupportedControl(f"{self.model} cannot set chip frequency")

    async def set_chip_frequencies(self, board: int, mhz: Sequence[float]) -> None:
        """Each chip of one board at its own frequency (0: chip off). Backends that can batch override this
        (one ramp for a whole chain, one write in a simulator); the tuner's plans arrive here board by board."""
        for chip, f in enumerate(mhz):
            await self.set_chip_frequency(board, chip, f)

    async def set_board_frequency(self, board: int, mhz: float) -> None:
        """Every chip of one board at ``mhz`` (backends that can do it in one call override this)."""
        limits = self.limits()
        if limits is None:
            raise UnsupportedControl(f"{self.model} cannot set chip frequency")
        for chip in range(limits.chips_per_board):
            await self.set_chip_frequency(board, chip, mhz)

    async def set_board_voltage(self, board: int, volts: float) -> None:
        raise UnsupportedControl(f"{self.model} cannot set board voltage")

    async def set_fan_duty(self, duty_pct: float) -> None:
        raise UnsupportedControl(f"{self.model} has no controllable fans")

    async def set_board_enabled(self, board: int, enabled: bool) -> None:
        raise UnsupportedControl(f"{self.model} cannot switch hashboards")

    async def set_ticket_difficulty(self, difficulty: float) -> None:
        """How hard a nonce must be for a chip to report it (lower: more nonces, finer error statistics)."""
        raise UnsupportedControl(f"{self.model} has a fixed ticket difficulty")

    @property
    def clock(self) -> Clock:
        """The clock control loops should use with this hardware (simulators run faster than real time)."""
        return WallClock()

    def limits(self) -> HardwareLimits | None:
        """Control ranges, or None for hardware without tunable clocks (CPU)."""
        return None

    def expected_hashrate(self) -> float | None:
        """Hashes per second behind the nonces this backend reports (for share-rate and difficulty sizing).

        None when unknown. A simulator reports the rate of the real hashing that finds its nonces.
        """
        return None


