"""``DeviceControl`` (what every device offers) and ``ControlSurface`` (one implementation of its semantics).

An implementation subclasses ``ControlSurface`` and fills in the hardware hooks (``_stop``, ``_run``, ...);
the base class owns the state machine (operator hold, sleep, curtail fraction), the conversion of watts to a
fraction, and "curtail 0 is sleep", so every device kind behaves the same. A hook the device cannot do
raises ``UnsupportedControl``.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from openmos.control.commands import (
    Command,
    Curtail,
    Locate,
    Pause,
    Reboot,
    Resume,
    SetCooling,
    SetFrequency,
    SetPools,
    SetTarget,
    Sleep,
    command_name,
)
from openmos.control.errors import UnsupportedControl
from openmos.control.status import Ack, Capabilities, DeviceData, DeviceInfo, RunState


@runtime_checkable
class DeviceControl(Protocol):
    """One device as the rest of OpenMOS sees it: identity, the last reading, and typed commands."""

    device_id: str

    @property
    def capabilities(self) -> Capabilities: ...

    def info(self) -> DeviceInfo: ...

    def get_data(self) -> DeviceData:
        """The latest reading; never blocks (devices that poll refresh in the background)."""
        ...

    async def execute(self, command: Command) -> Ack:
        """Run one command; raises ``UnsupportedControl`` when the device cannot."""
        ...


class ControlSurface:
    """The shared semantics of the control surface; subclasses implement the hooks for their hardware."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.held = False  # operator pause
        self.sleeping = False
        self.fraction = 1.0  # curtailment requested by energy (1 = full)
        self.locate_until = 0.0

    @property
    def capabilities(self) -> Capabilities:
        """What this device can do (override with its real abilities)."""
        return Capabilities()

    # -- state -------------------------------------------------------------------------------------------

    def protecting(self) -> str | None:
        """Why the safety layer has this device shut down, or None (override where there is one)."""
        return None

    @property
    def state(self) -> RunState:
        if self.protecting():
            return RunState.PROTECTING
        if self.held:
            return RunState.PAUSED
        if self.sleeping:
            return RunState.SLEEPING
        return RunState.CURTAILED if self.fraction < 1.0 else RunState.MINING

    @property
    def locating(self) -> bool:
        return self.locate_until > time.time()

    def full_power_w(self) -> float | None:
        """Wall power at the uncurtailed target, if the device knows it (turns watts into a fraction)."""
        return None

    # -- the one entry point -------------------------------------------------------------------------

    async def execute(self, command: Command) -> Ack:
        message = await self._dispatch(command)
        return Ack(self.device_id, command_name(command), True, self.state, message)

    async def _dispatch(self, command: Command) -> str:
        if isinstance(command, Pause):
            await self._stop(hold=True)
            self.held = True
            return "paused by operator"
        if isinstance(command, Resume):
            await self._run(1.0)
            self.held, self.sleeping, self.fraction = False, False, 1.0
            return "running at full target"
        if isinstance(command, Sleep):
            return await self._curtail(0.0)
        if isinstance(command, Curtail):
            return await self._curtail(self._fraction_of(command))
        if isinstance(command, SetTarget):
            return await self._set_target(command)
        if isinstance(command, SetPools):
            return await self._set_pools(command)
        if isinstance(command, SetCooling):
            return await self._set_cooling(command)
        if isinstance(command, Locate):
            self.locate_until = time.time() + command.seconds
            await self._locate(command.seconds)
            return f"locating for {command.seconds:g} s"
        if isinstance(command, Reboot):
            return await self._reboot()
        if isinstance(command, SetFrequency):
            return await self._set_frequency(command)
        raise UnsupportedControl(f"unknown command {type(command).__name__}")

    def _fraction_of(self, command: Curtail) -> float:
        if command.fraction is not None:
            return command.fraction
        assert command.watts is not None
        if command.watts == 0.0:
            return 0.0
        full = self.full_power_w()
        if not full or full <= 0:
            raise UnsupportedControl(f"{self.device_id} does not know its full power: curtail to a fraction")
        return min(1.0, command.watts / full)

    async def _curtail(self, fraction: float) -> str:
        if 0.0 < fraction < 1.0 and not self.capabilities.curtail:
            raise UnsupportedControl(f"{self.device_id} can only run at full power or sleep")
        if fraction == 0.0:
            if not self.held:
                await self._stop(hold=False)
            self.sleeping, self.fraction = True, 0.0
            return "sleeping" + (" (held by operator pause)" if self.held else "")
        if not self.held:
            await self._run(fraction)
        self.sleeping, self.fraction = False, fraction
        note = " (applies at resume: paused by operator)" if self.held else ""
        return f"running at {fraction:.0%} of target{note}"

    # -- hooks (override what the hardware can do) ------------------------------------------------------

    async def _stop(self, hold: bool) -> None:
        """Stop hashing at the lowest power (``hold``: operator pause, else energy sleep)."""
        raise UnsupportedControl(f"{self.device_id} cannot stop hashing")

    async def _run(self, fraction: float) -> None:
        """Hash at ``fraction`` of the configured target (1.0 = full), waking from a stop if needed."""
        raise UnsupportedControl(f"{self.device_id} cannot change its hashing")

    async def _set_target(self, command: SetTarget) -> str:
        raise UnsupportedControl(f"{self.device_id} has no performance targets")

    async def _set_pools(self, command: SetPools) -> str:
        raise UnsupportedControl(f"{self.device_id} cannot change pools")

    async def _set_cooling(self, command: SetCooling) -> str:
        raise UnsupportedControl(f"{self.device_id} has no cooling control")

    async def _locate(self, seconds: float) -> None:
        """Blink / flag the device; the base class already records ``locate_until``."""

    async def _reboot(self) -> str:
        raise UnsupportedControl(f"{self.device_id} cannot reboot")

    async def _set_frequency(self, command: SetFrequency) -> str:
        raise UnsupportedControl(f"{self.device_id} has no settable clocks")

    # -- convenience (the same commands, for callers in Python) -----------------------------------------

    async def pause(self) -> Ack:
        return await self.execute(Pause())

    async def resume(self) -> Ack:
        return await self.execute(Resume())

    async def sleep(self) -> Ack:
        return await self.execute(Sleep())

    async def curtail(self, fraction: float | None = None, watts: float | None = None) -> Ack:
        return await self.execute(Curtail(fraction=fraction, watts=watts))
