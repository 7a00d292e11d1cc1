"""Ground truth of what went wrong: the fault event log a maintenance tool is scored against.

Faults are injected by hand (tests, demos) or drawn from ``FaultRates`` when the fleet runs with a fault
speed-up. Each is logged once, at the simulated second it happened, with where it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FaultKind(StrEnum):
    CHIP_DEAD = "chip_dead"  # every hash the chip computes is wrong; it still draws power
    DOMAIN_DROP = "domain_drop"  # a voltage domain's chips stop answering (no nonces, no errors)
    FAN_WEAR = "fan_wear"  # a fan bearing starts to wear: speed and airflow fall over days
    FAN_STOP = "fan_stop"  # a fan stops
    SENSOR_STUCK = "sensor_stuck"  # a temperature sensor keeps reporting one value
    BOARD_DEAD = "board_dead"  # a whole hashboard's chain stops answering (cracked solder, lost chain)
    PSU_TRIP = "psu_trip"  # the power supply shuts down: the miner stops


@dataclass(frozen=True)
class FaultEvent:
    time_s: float
    miner: int
    kind: FaultKind
    board: int | None = None
    index: int | None = None  # chip, domain, fan or sensor number
    detail: str = ""
    injected: bool = False  # True: put there by hand; False: drawn from the fault rates

    def __str__(self) -> str:
        where = f"board {self.board} " if self.board is not None else ""
        what = f"#{self.index}" if self.index is not None else ""
        origin = "injected" if self.injected else "random"
        text = f"t={self.time_s:.0f}s miner {self.miner} {where}{self.kind.value} {what} ({origin}) {self.detail}"
        return text.strip()
