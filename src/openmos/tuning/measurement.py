"""Measurement: what a span of time showed -- per-chip nonces and errors, input power, valid hashrate.

Only counters, sensors and the input power reading are used. Each window first lets the last change settle
(PLL relock, voltage slew, power-meter lag: the hardware says how long in ``HardwareLimits.settle_s``), so
a window never mixes the old setting with the new one.

Valid hashrate has two estimates. Counted: nonces x ticket difficulty x 2^32 / s -- unbiased but Poisson
noisy (a one-chip Bitaxe counts ~60 nonces/s: 2-4 % noise per window). Clocked: every chip's programmed
frequency x hashes per MHz x its measured valid share -- what the chips' clocks deliver, with the nonce
counts only deciding the (small) error share; a chip silent where dozens of nonces were due counts zero.
The closed loop controls on the clocked figure; both are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from openmos.base.clock import Clock
from openmos.hw.interface import HardwareTelemetry, MiningHardware
from openmos.tuning.reference import PowerReference

log = logging.getLogger(__name__)

IntArray = NDArray[np.int64]
Tick = Callable[[], Awaitable[tuple[HardwareTelemetry, float]]]


@dataclass(frozen=True)
class Window:
    nonces: IntArray  # (boards, chips) valid nonces in the window
    errors: IntArray
    power_w: float  # mean input power reading
    hashrate_ths: float  # valid hashrate from the counters
    hottest_c: float  # hottest sensor seen during the window
    seconds: float
    clocked_ths: float = 0.0  # valid hashrate from chip clocks x measured valid share (0: unknown)
    reference_w: float | None = None  # mean reading of a reference wall meter, where one is configured

    @property
    def valid_ths(self) -> float:
        """The low-noise valid hashrate for control: clocked where known, else counted."""
        return self.clocked_ths if self.clocked_ths > 0 else self.hashrate_ths

    @property
    def j_per_th(self) -> float:
        return self.power_w / self.valid_ths if self.valid_ths > 0 else float("inf")


def counts(tel: HardwareTelemetry) -> tuple[IntArray, IntArray]:
    nonces = np.array([[c.nonces for c in b.chips] for b in tel.boards], dtype=np.int64)
    errors = np.array([[c.errors for c in b.chips] for b in tel.boards], dtype=np.int64)
    return nonces, errors


def hottest(tel: HardwareTelemetry) -> float:
    temps = [t for b in tel.boards if b.enabled for t in (b.chip_temperatures_c or b.temperatures_c)]
    finite = [t for t in temps if np.isfinite(t)]
    return max(finite) if finite else 0.0


def error_fraction(nonces: IntArray, errors: IntArray) -> NDArray[np.float64]:
    total = nonces + errors
    return np.where(total > 0, errors / np.maximum(total, 1), 0.0).astype(np.float64)


class Meter:
    """Measures windows of counters and power on one miner, driving the cooling tick while it waits."""

    def __init__(self, hw: MiningHardware, clock: Clock, tick: Tick, hashes_per_mhz: float = 0.0,
                 reference: PowerReference | None = None) -> None:
        self.hw = hw
        self.reference = reference
        self.clock = clock
        self._tick = tick
        self.ticket = 1.0  # difficulty each counted nonce stands for
        self.hashes_per_mhz = hashes_per_mhz  # per chip (0: clocked hashrate unknown)

    async def window(self, seconds: float, settle_s: float = 0.0) -> Window:
        """Wait ``settle_s`` (cooling keeps running), then measure for ``seconds``."""
        start = self.clock.now()
        while self.clock.now() - start < settle_s - 1e-9:
            await self._tick()
        first = self.hw.telemetry()
        n0, e0 = counts(first)
        start = self.clock.now()
        powers: list[float] = []
        refs: list[float] = []
        hot = 0.0
        tel = first
        while self.clock.now() - start < seconds - 1e-9:
            tel, h = await self._tick()
            hot = max(hot, h)
            if tel.input_power_w is not None and np.isfinite(tel.input_power_w):
                powers.append(tel.input_power_w)
            if self.reference is not None:
                refs.append(await self._read_reference())
        n1, e1 = counts(tel)
        d_n, d_e = np.maximum(n1 - n0, 0), np.maximum(e1 - e0, 0)  # a counter reset is not negative work
        dt = self.clock.now() - start
        ths = float(d_n.sum() * self.ticket * 2**32 / dt / 1e12) if dt > 0 else 0.0
        power = float(np.mean(powers)) if powers else 0.0
        good = [r for r in refs if np.isfinite(r) and r > 0]
        ref = float(np.mean(good)) if refs and len(good) == len(refs) else None  # a gap spoils the window
        return Window(d_n, d_e, power, ths, hot, dt, self._clocked(tel, d_n, d_e, dt), ref)

    async def _read_reference(self) -> float:
        assert self.reference is not None
        try:
            return float(await self.reference.read_power_w())
        except Exception as exc:  # a meter that fails (timeout, Modbus error) only costs this window's pair
            log.debug("reference meter: %s", exc)
            return float("nan")

    def _clocked(self, tel: HardwareTelemetry, nonces: IntArray, errors: IntArray, seconds: float) -> float:
        if self.hashes_per_mhz <= 0 or seconds <= 0:
            return 0.0
        freq = np.array([[(c.frequency_mhz or 0.0) if c.enabled and b.enabled else 0.0 for c in b.chips]
                         for b in tel.boards], dtype=np.float64)
        if freq.shape != nonces.shape or not np.all(np.isfinite(freq)) or np.any(freq < 0):
            return 0.0
        total = nonces + errors
        expected = freq * self.hashes_per_mhz * seconds / (self.ticket * 2**32)
        share = np.where(total > 0, nonces / np.maximum(total, 1), np.where(expected >= 30, 0.0, 1.0))
        return float((freq * share).sum() * self.hashes_per_mhz / 1e12)
