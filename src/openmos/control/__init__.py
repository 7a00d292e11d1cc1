"""The one device control surface: typed commands in, typed status out, for every kind of device.

Owns ``DeviceControl`` (the protocol every device implements: the OpenMOS agent in ``miner``, each fleet
worker kind in ``fleet.workers``, the simulated devices), ``ControlSurface`` (the base class that gives every
implementation the same semantics), the typed commands (pause, resume, sleep, curtail to a fraction or to
watts, performance target/profile, pools, cooling, locate, reboot, board frequency), the typed status objects
(``DeviceInfo``, ``DeviceData``, ``Ack``) and ``UnsupportedControl``. REST, cgminer, the fleet node and the
energy layer all call this surface; dictionaries exist only at the wire edges (``command_from_wire``,
``to_wire``).

Semantics (the same on every device):

- ``Pause``: an operator hold. Hashing stops until ``Resume``; energy commands issued meanwhile are
  remembered but do not restart the device.
- ``Resume``: leave pause and sleep; back to full (uncurtailed) performance.
- ``Sleep`` == ``Curtail(fraction=0)`` == ``Curtail(watts=0)``: lowest power (boards off where possible).
- ``Curtail(fraction=f)``, 0 < f <= 1: run at f of the configured target without re-tuning (1 = full);
  wakes a sleeping device. ``Curtail(watts=w)`` is ``f = w / full power`` (clamped to [0, 1]).
- ``SetTarget``: a new base target (power, hashrate or profile); curtailment scales it.
- ``SetFrequency``: a fixed board clock; refused while an autotuner owns the clocks.
- Anything a device cannot do raises ``UnsupportedControl`` (mapped to a clear error at each edge).

Imports nothing else from ``openmos`` (the lowest layer after ``base``).
"""

from openmos.control.commands import (
    Command,
    Curtail,
    Locate,
    Pause,
    PoolSpec,
    Reboot,
    Resume,
    SetCooling,
    SetFrequency,
    SetPools,
    SetTarget,
    Sleep,
    command_from_wire,
    command_name,
)
from openmos.control.errors import InvalidCommand, UnsupportedControl
from openmos.control.status import (
    Ack,
    Capabilities,
    CurvePoint,
    DeviceData,
    DeviceInfo,
    MaintenanceFlag,
    MaintenanceInfo,
    PoolInfo,
    RunState,
    to_wire,
)
from openmos.control.surface import ControlSurface, DeviceControl

__all__ = [
    "Ack",
    "Capabilities",
    "Command",
    "ControlSurface",
    "Curtail",
    "CurvePoint",
    "DeviceControl",
    "DeviceData",
    "DeviceInfo",
    "InvalidCommand",
    "Locate",
    "MaintenanceFlag",
    "MaintenanceInfo",
    "Pause",
    "PoolInfo",
    "PoolSpec",
    "Reboot",
    "Resume",
    "RunState",
    "SetCooling",
    "SetFrequency",
    "SetPools",
    "SetTarget",
    "Sleep",
    "UnsupportedControl",
    "command_from_wire",
    "command_name",
    "to_wire",
]
