"""Chip-level autotuning, performance targets and profiles, cooling and thermal protection.

Owns the ``Autotuner`` (per-chip frequency at per-board voltage for a power or hashrate target), the
profile store, the efficiency curve, fan control (auto PID / manual / immersion / hydro), dynamic
performance scaling and emergency shutdown. It sees hardware only through ``openmos.hw.MiningHardware``
(counters, sensors, power, controls): it never imports the simulator. Imports ``base`` and ``hw``.
"""

from openmos.tuning.profiles import ProfileStore, TunedProfile
from openmos.tuning.targets import PRESETS, PerformanceTarget, TargetKind
from openmos.tuning.thermal import CoolingConfig, CoolingMode, ThermalLimits
from openmos.tuning.tuner import Autotuner, TunerOptions, TunerState, TunerStatus

__all__ = [
    "PRESETS",
    "Autotuner",
    "CoolingConfig",
    "CoolingMode",
    "PerformanceTarget",
    "ProfileStore",
    "TargetKind",
    "ThermalLimits",
    "TunedProfile",
    "TunerOptions",
    "TunerState",
    "TunerStatus",
]
