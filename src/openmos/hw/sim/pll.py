"""The frequencies a BM13xx PLL can make, from the public register description (shared/reference/protocols.md).

f = 25 MHz x fb_div / (ref_div x pd1 x pd2), ref_div 1-2, pd2 < pd1 <= 7, fb_div in the chip's range.
A driver asked for a frequency programs the nearest one it can make; the simulator does the same.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numpy.typing import NDArray

from openmos.hw.sim.models import ChipType


@cache
def pll_grid(chip: ChipType, lo_mhz: float = 50.0, hi_mhz: float = 1000.0) -> tuple[float, ...]:
    """Every distinct frequency (MHz, ascending, rounded to 1 kHz) within ``lo_mhz``..``hi_mhz``."""
    out: set[float] = set()
    fb = np.arange(chip.fb_div[0], chip.fb_div[1] + 1, dtype=np.float64)
    for ref in chip.ref_divs:
        for pd1 in range(2, chip.post_div_max + 1):
            for pd2 in range(1, pd1):
                f = chip.pll_ref_mhz * fb / (ref * pd1 * pd2)
                out.update(round(float(x), 3) for x in f if lo_mhz <= x <= hi_mhz)
    return tuple(sorted(out))


def snap_nearest(grid: NDArray[np.float64], mhz: NDArray[np.float64]) -> NDArray[np.float64]:
    """The grid frequency nearest each request (0 stays 0: chip off). ``grid`` ascending."""
    g = grid
    idx = np.minimum(np.maximum(np.searchsorted(g, mhz), 1), len(g) - 1)
    lower, upper = g[idx - 1], g[idx]
    nearest = np.where(mhz - lower <= upper - mhz, lower, upper)
    return np.asarray(np.where(mhz > 0, nearest, 0.0))
