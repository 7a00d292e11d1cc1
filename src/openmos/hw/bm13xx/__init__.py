"""BM13xx chip driver: frame codec (``crc``, ``protocol``), chip types (``chip`` + one module per type), the
chain (enumeration, registers, PLL, jobs, nonces) and the ``MiningHardware`` backend over a board.

Imports ``openmos.bitcoin`` and the rest of ``openmos.hw`` only.
"""

from openmos.hw.bm13xx.bm1366 import BM1366
from openmos.hw.bm13xx.bm1368 import BM1368
from openmos.hw.bm13xx.bm1370 import BM1370
from openmos.hw.bm13xx.chip import ChipType

CHIPS: dict[str, ChipType] = {c.name: c for c in (BM1366, BM1368, BM1370)}


def chip_type(name: str) -> ChipType:
    try:
        return CHIPS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown chip {name!r}: one of {', '.join(CHIPS)}") from None


__all__ = ["BM1366", "BM1368", "BM1370", "CHIPS", "ChipType", "chip_type"]
