"""Build a backend from a spec string: ``cpu``, ``cpu:N`` or ``sim:MODEL``."""

from __future__ import annotations

from openmos.hw.cpu import CpuHardware, CpuSettings
from openmos.hw.interface import MiningHardware


def create_hardware(spec: str, *, seed: int = 0) -> MiningHardware:
    kind, _, arg = spec.partition(":")
    if kind == "cpu":
        if arg and (not arg.isdigit() or int(arg) < 1):
            raise ValueError(f"cpu worker count must be a positive integer, got {arg!r}")
        return CpuHardware(CpuSettings(workers=int(arg) if arg else 0))
    raise ValueError(f"unknown hardware {spec!r}: use cpu, cpu:N")
