"""Chip-level autotuning, performance targets and profiles, cooling and thermal protection.

Owns the ``Autotuner`` (per-chip frequency at per-board voltage for a power, hashrate or J/TH target):
``tuner`` (state machine), ``measurement`` (windows of counters and power), ``learning`` (where to
sweep), ``sweep`` (per-chip limits), ``planning`` (power model, plans), ``convergence`` (closed loop, trims),
``governor`` (overclock thermal governor), ``persistence`` (chip model, profiles, efficiency curve),
``state`` (options, status, decision log); plus the
profile store, the efficiency curve, fan control (auto PID / manual / immersion / hydro), dynamic
performance scaling and emergency shutdown. It sees hardware only through ``openmos.hw.MiningHardware``
(counters, sensors, power, controls): it never imports the simulator. Imports ``base``, ``control`` and ``hw``.
"""

from openmos.tuning.profiles import ProfileStore, TunedProfile
from openmos.tuning.state import Decision, TunerOptions, TunerState, TunerStatus
from openmos.tuning.targets import PRESETS, PerformanceTarget, TargetKind
from openmos.tuning.thermal import CoolingConfig, CoolingMode, ThermalLimits
from openmos.tuning.tuner import Autotuner

__all__ = [
    "PRESETS",
    "Autotuner",
    "CoolingConfig",
    "CoolingMode",
    "Decision",
    "PerformanceTarget",
    "ProfileStore",
    "TargetKind",
    "ThermalLimits",
    "TunedProfile",
    "TunerOptions",
    "TunerState",
    "TunerStatus",
]
