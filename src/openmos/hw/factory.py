"""Build a backend from a spec string: ``cpu``, ``cpu:N`` or ``sim:MODEL``."""

from __future__ import annotations

from openmos.hw.board.factory import BM13XX_HELP, create_bitaxe, create_serial_chain
from openmos.hw.cpu import CpuHardware, CpuSettings, cpu_workers
from openmos.hw.interface import MiningHardware
from openmos.hw.sim.backend import SimHardware
from openmos.hw.sim.clock import SimClock
from openmos.hw.sim.models import MODELS

HARDWARE_HELP = (f"cpu, cpu:N (N hashing processes), sim:MODEL with MODEL one of {', '.join(MODELS)}, "
                 f"or a BM13xx board: {BM13XX_HELP}")


def create_hardware(spec: str, *, seed: int = 0, sim_speed: float = 1.0) -> MiningHardware:
    kind, _, arg = spec.partition(":")
    if kind == "cpu":
        return CpuHardware(CpuSettings(workers=cpu_workers(arg)))
    if kind == "sim":
        if not arg:
            raise ValueError(f"sim needs a model: {HARDWARE_HELP}")
        return SimHardware(arg, seed=seed, clock=SimClock(sim_speed))
    if kind == "bitaxe":
        return create_bitaxe(arg)
    if kind == "bm13xx":
        return create_serial_chain(arg)
    raise ValueError(f"unknown hardware {spec!r}: use {HARDWARE_HELP}")
