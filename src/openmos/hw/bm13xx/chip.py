"""What a BM13xx chip type is: identity, core counts, PLL grid, job-id and nonce field layout.

The per-type modules (``bm1366``, ``bm1368``, ``bm1370``, ``bm1397``) each build one ``ChipType`` with the
numbers that differ; everything here is shared and pure.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from openmos.hw.bm13xx import protocol as p

REF_CLOCK_MHZ = 25.0
RAMP_STEP_MHZ = 6.25


@dataclass(frozen=True, slots=True)
class PllSetting:
    fb_div: int
    ref_div: int
    post_div1: int
    post_div2: int

    @property
    def mhz(self) -> float:
        return REF_CLOCK_MHZ * self.fb_div / (self.ref_div * self.post_div1 * self.post_div2)

    @property
    def vco_mhz(self) -> float:
        return REF_CLOCK_MHZ * self.fb_div / self.ref_div

    def register(self) -> int:
        """Register 0x08: ``[0x40 | 0x10 if VCO >= 2400 MHz, fb_div, ref_div, (pd1-1) << 4 | (pd2-1)]``."""
        flag = 0x50 if self.vco_mhz >= 2400 else 0x40
        return (flag << 24) | (self.fb_div << 16) | (self.ref_div << 8) | ((self.post_div1 - 1) << 4) | (
            self.post_div2 - 1)

    @classmethod
    def from_register(cls, value: int) -> PllSetting:
        return cls((value >> 16) & 0xFF, (value >> 8) & 0xFF, ((value >> 4) & 0x0F) + 1, (value & 0x0F) + 1)


@dataclass(frozen=True)
class ChipType:
    name: str
    chip_id: int  # as read from register 0x00 (upper half)
    cores: int  # big cores (nonce bits 31-25 name one)
    small_cores: int  # total hashing units: GH/s = MHz x small_cores / 1000
    fb_div_range: tuple[int, int]
    freq_range_mhz: tuple[float, float]  # what firmware should offer (stock and tuning range)
    stock_mhz: float
    volt_range: tuple[float, float]  # core voltage (V) a board may set
    stock_voltage: float
    job_id_from_header: Callable[[int], int]  # result header -> 4-bit job slot
    small_core_from_header: Callable[[int], int]
    init_writes: tuple[tuple[int, int], ...] = ()  # (register, value) broadcast after addressing
    per_chip_writes: tuple[tuple[int, int], ...] = ()  # (register, value) written to each chip
    hash_counting: int = 0  # register 0x10 value
    job_slots: int = 16
    job_slot_step: int = 1  # how the job slot advances per job
    has_temperature: bool = False  # a die temperature readout the host can use
    extra: dict[str, int] = field(default_factory=dict)

    # -- PLL grid -----------------------------------------------------------------------------------

    @cached_property
    def pll_grid(self) -> tuple[tuple[float, PllSetting], ...]:
        """Every frequency the PLL can make within range, lowest first, with the divider set that makes it.

        For a frequency reachable several ways the setting with the smallest post-divider product, then the
        smallest reference divider, wins.
        """
        lo, hi = self.fb_div_range
        best: dict[float, PllSetting] = {}
        for ref in (1, 2):
            for pd1 in range(1, 8):
                for pd2 in range(1, pd1 + 1):
                    for fb in range(lo, hi + 1):
                        s = PllSetting(fb, ref, pd1, pd2)
                        f = round(s.mhz, 6)
                        if not self.freq_range_mhz[0] - 1e-9 <= f <= self.freq_range_mhz[1] + 1e-9:
                            continue
                        old = best.get(f)
                        if old is None or (pd1 * pd2, ref) < (old.post_div1 * old.post_div2, old.ref_div):
                            best[f] = s
        return tuple(sorted(best.items()))

    @cached_property
    def _grid_freqs(self) -> list[float]:
        return [f for f, _ in self.pll_grid]

    @property
    def grid_mhz(self) -> tuple[float, ...]:
        """The frequencies of ``pll_grid``, ascending."""
        return tuple(self._grid_freqs)

    def quantise(self, mhz: float) -> float:
        """The grid frequency closest to ``mhz`` (clamped to the chip's range)."""
        return self.pll_for(mhz).mhz

    def pll_for(self, mhz: float) -> PllSetting:
        if mhz != mhz:
            raise ValueError("frequency is NaN")
        freqs = self._grid_freqs
        i = bisect.bisect_left(freqs, mhz)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(freqs)]
        j = min(candidates, key=lambda k: abs(freqs[k] - mhz))
        return self.pll_grid[j][1]

    def ramp(self, start_mhz: float, target_mhz: float) -> list[float]:
        """Grid frequencies from ``start`` to ``target`` in steps of about 6.25 MHz (target last)."""
        target = self.quantise(target_mhz)
        current = self.quantise(start_mhz)
        steps: list[float] = []
        direction = 1 if target > current else -1
        f = current
        while (target - f) * direction > RAMP_STEP_MHZ:
            f = self.quantise(f + direction * RAMP_STEP_MHZ)
            if steps and f == steps[-1]:  # grid too coarse here: jump
                break
            steps.append(f)
        if not steps or steps[-1] != target:
            steps.append(target)
        return steps

    # -- nonce fields -------------------------------------------------------------------------------

    def job_header(self, slot: int) -> int:
        """Job frame byte 0: the slot in bits 6-3."""
        return (slot & 0x0F) << 3

    def core_of(self, nonce_be: int) -> int:
        return (nonce_be >> 25) & 0x7F

    def chip_address_of(self, nonce_be: int) -> int:
        return (nonce_be >> 17) & 0xFF

    def hashrate_ghs(self, mhz: float) -> float:
        return mhz * self.small_cores / 1000.0

    def version_write(self, mask: int) -> bytes:
        return p.write_register(0, p.REG_VERSION_ROLLING, p.version_rolling_value(mask), broadcast=True)
