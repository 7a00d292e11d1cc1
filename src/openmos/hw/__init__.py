"""Hardware abstraction layer: hashboards and chips behind one interface.

Owns the work/nonce contract (``WorkItem`` in, ``NonceResult`` out), telemetry as real hardware exposes it
(per-chip nonce/error counters, board temperatures, fans, input power) and the control surface (frequency,
voltage, fans). Backends: ``cpu`` (really hashes with hashlib), ``sim`` (the modelled miner physics) and
``bm13xx`` (BM13xx chains on Bitaxe and serial boards). Imports ``openmos.base``, ``openmos.bitcoin`` and
``openmos.control`` (its ``UnsupportedControl``) -- never the agent, pool or anything above.
"""

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
from openmos.hw.work import NonceResult, WorkItem

__all__ = [
    "BoardTelemetry",
    "ChipTelemetry",
    "FanTelemetry",
    "HardwareLimits",
    "HardwareTelemetry",
    "MiningHardware",
    "NonceResult",
    "NonceSink",
    "UnsupportedControl",
    "WorkItem",
    "WorkProvider",
]
