"""Physically modelled ASIC simulator (a backend of the hardware abstraction layer).

Owns the miner models (data), the per-chip physics (pure numpy functions), the vectorised fleet stepper,
the oracle that scores tuners, simulated time and the calibration report. What the agent sees goes through
``SimHardware`` and holds only what real hardware exposes; the hidden chip parameters (speed ``K``,
leakage ``G``) never leave ``FleetSim`` except to the oracle, which only benchmarks and tests use.
Everything produced here is *modelled*, and telemetry says so. Imports ``openmos.bitcoin`` and ``openmos.hw``.
"""

from openmos.hw.sim.clock import SimClock
from openmos.hw.sim.fleet import FleetSim
from openmos.hw.sim.models import MODELS, ChipType, MinerModel, get_model

__all__ = ["MODELS", "ChipType", "FleetSim", "MinerModel", "SimClock", "get_model"]
