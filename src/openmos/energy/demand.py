"""OpenADR 2.0b demand response: a VEN (openleadr client) that curtails the site on events and reports load.

Signal mapping: SIMPLE level 0/1/2/3 (normal / moderate / high / emergency) -> run at 100/75/50/0 % of the
site; LOAD_DISPATCH -> run at that many kW. The VEN opts in unless the operator's policy says otherwise
(e.g. refuse moderate events while hashprice is high), and reports measured site power every interval.
Events come from the network: a payload that is not a finite number, a SIMPLE level other than 0-3 or a
negative load is not acted on (opt out, logged), times that are not aware datetimes/durations are taken as
"now" / one hour, and only the last ``MAX_EVENTS`` events are kept.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from openleadr import OpenADRClient

from openmos.energy.site import PowerMeter, Site

log = logging.getLogger(__name__)

SIMPLE_LEVELS = {0: 1.0, 1: 0.75, 2: 0.5, 3: 0.0}
MAX_EVENTS = 100
MAX_AHEAD_S = 30 * 86400.0  # an event's start or length beyond this is taken as this


def _finite(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


class DemandResponseVen:
    def __init__(self, site: Site, meter: PowerMeter, vtn_url: str, ven_name: str = "openmos-site",
                 opt_in: Callable[[dict[str, Any]], bool] | None = None, report_interval_s: float = 10.0) -> None:
        self.site = site
        self.meter = meter
        self.opt_in = opt_in or (lambda event: True)
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)  # the most recent, for inspection
        self.last_load_w: float | None = None
        # Per event id: its start and end timers, and the level of each event now in its window. The site runs
        # at the lowest level in force. (One shared restore timer let a later event's end stand for an earlier
        # one's: the site stayed curtailed until the later event ended; a cancelled event still curtailed.)
        self._timers: dict[str, tuple[asyncio.TimerHandle, asyncio.TimerHandle]] = {}
        self._active: dict[str, float] = {}
        self._anonymous = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.client = OpenADRClient(ven_name=ven_name, vtn_url=vtn_url)
        self.client.add_handler("on_event", self._on_event)
        self.client.add_handler("on_update_event", self._on_event)  # a modification or a cancellation
        self.client.add_report(callback=self._measured_load, resource_id="site", measurement="real_power",
                               sampling_rate=timedelta(seconds=report_interval_s), unit="W",
                               report_duration=timedelta(hours=1))

    async def start(self) -> None:
        await self.client.run()

    async def stop(self) -> None:
        for event_id in list(self._timers):
            self._forget(event_id)
        await self.client.stop()

    async def _measured_load(self) -> float:
        self.last_load_w = await self.meter.read_power_w()
        return self.last_load_w

    def fraction_for(self, event: dict[str, Any]) -> float | None:
        for signal in event.get("event_signals", []):
            name = str(signal.get("signal_name", "")).upper()
            intervals = signal.get("intervals") or [{}]
            payload = intervals[0].get("signal_payload")
            if payload is None:
                continue
            value = _finite(payload)
            if name == "SIMPLE":  # an unknown level (7, 1.5, NaN: int() raised on it) is not acted on
                return SIMPLE_LEVELS.get(int(value)) if value is not None and value.is_integer() else None
            if name == "LOAD_DISPATCH" and self.site.nameplate_w:
                if value is None or value < 0:
                    return None
                return min(1.0, value * 1000.0 / self.site.nameplate_w)
        return None

    def _event_id(self, event: dict[str, Any]) -> str:
        descriptor = event.get("event_descriptor")
        event_id = descriptor.get("event_id") if isinstance(descriptor, dict) else None
        if isinstance(event_id, str) and 0 < len(event_id) <= 256:
            return event_id
        self._anonymous += 1
        return f"anonymous-{self._anonymous}"

    def _forget(self, event_id: str) -> None:
        """Cancel an event's start and end timers."""
        for handle in self._timers.pop(event_id, ()):
            handle.cancel()

    async def _on_event(self, event: dict[str, Any]) -> str:
        self.events.append(event)
        event_id = self._event_id(event)
        descriptor = event.get("event_descriptor")
        status = descriptor.get("event_status") if isinstance(descriptor, dict) else None
        if event_id in self._timers or event_id in self._active:  # a modification replaces the event
            self._forget(event_id)
            if self._active.pop(event_id, None) is not None:
                await self._level()
        if status in ("cancelled", "completed"):
            log.info("OpenADR event %s %s: its curtailment is lifted", event_id[:64], status)
            return "optIn"
        fraction = self.fraction_for(event)
        if fraction is None:
            log.warning("OpenADR event has no signal we act on (SIMPLE level 0-3 or a LOAD_DISPATCH in kW); "
                        "opting out")
            return "optOut"
        if not self.opt_in(event):
            log.info("OpenADR event opted out by policy")
            return "optOut"
        if len(self._timers) >= MAX_EVENTS:  # a flood of future events held a timer each, for ever
            log.warning("OpenADR event refused: %d events are already scheduled", len(self._timers))
            return "optOut"
        period = event.get("active_period") or {}
        start = period.get("dtstart") if isinstance(period, dict) else None
        if not isinstance(start, datetime) or start.tzinfo is None:  # a naive time cannot be compared with ours
            start = datetime.now(UTC)
        duration = period.get("duration") if isinstance(period, dict) else None
        if not isinstance(duration, timedelta) or duration <= timedelta(0):
            duration = timedelta(hours=1)
        delay = min(max(0.0, (start - datetime.now(UTC)).total_seconds()), MAX_AHEAD_S)
        length = min(duration.total_seconds(), MAX_AHEAD_S)
        loop = asyncio.get_running_loop()

        def begin() -> None:
            self._active[event_id] = fraction
            self._spawn(loop)

        def end() -> None:
            self._timers.pop(event_id, None)
            if self._active.pop(event_id, None) is not None:
                self._spawn(loop)

        self._timers[event_id] = (loop.call_later(delay, begin), loop.call_later(delay + length, end))
        log.info("OpenADR event: site to %.0f %% in %.0f s for %s", fraction * 100, delay, duration)
        return "optIn"

    def _spawn(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._level())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _level(self) -> None:
        """The site at the lowest level of the events in force (100 % when none is)."""
        await self._apply(min(self._active.values(), default=1.0))

    async def _apply(self, fraction: float) -> None:
        result = await self.site.set_fraction(fraction)
        log.info("demand response: site at %.0f %% (%d devices acknowledged)", fraction * 100, result.acknowledged)
