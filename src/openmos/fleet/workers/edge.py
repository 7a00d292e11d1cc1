"""The fleet bus edge of a device: ``inventory``/``status``/``act`` dictionaries for ``fleet.node`` from the
typed control surface (``openmos.control``). Every worker kind mixes this in; the semantics stay in the
surface, this only parses and serialises.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from openmos.control import DeviceControl, InvalidCommand, UnsupportedControl, command_from_wire, to_wire

log = logging.getLogger(__name__)


class BusEdge:
    """Mix into a ``DeviceControl`` implementation to put it on the fleet bus."""

    fleet_actions: tuple[str, ...] = ()  # fleet-only actions (install, scan) handled by ``fleet_action``

    def inventory(self: DeviceControl) -> dict[str, Any]:
        return to_wire(self.info())

    def status(self: DeviceControl) -> dict[str, Any]:
        return to_wire(self.get_data())

    async def fleet_action(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": f"{action} is not supported by this device"}

    async def act(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run a bus action: parse it into a typed command, execute it, answer with the typed ack."""
        if action in self.fleet_actions:
            return await self.fleet_action(action, args)
        device = cast(DeviceControl, self)
        try:
            ack = await device.execute(command_from_wire(action, args))
        except (InvalidCommand, UnsupportedControl) as exc:
            log.info("fleet: %s on %s refused: %s", action, device.device_id, exc)
            return {"ok": False, "action": action, "error": str(exc)}
        return {"action": action, **to_wire(ack)}
