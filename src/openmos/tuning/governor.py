"""The overclock thermal governor: a share of the goal given up before the cooling guard's "hot" level.

Above stock the fans are near full and the guard's dynamic performance scaling would throttle in coarse steps
(each one a hot-throttle event). The governor acts first: while the hottest chip sits within a headroom of
"hot" with fans near full it gives up a small share of the goal per window, and gives 1 % back after a long
cool spell with fan headroom. A pure state machine: the tuner feeds it windows and logs its reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

STEP = 0.02  # share of the goal given up per hot window
RECOVER_S = 900.0  # cool for this long before giving 1 % back
FLOOR = 0.5  # never below half the goal (the guard's own scaling takes over)
NEAR_FULL_DUTY_PCT = 90.0
COOL_MARGIN_C = 3.0  # "cool" is this far below the governor's own threshold


@dataclass
class ThermalGovernor:
    scale: float = 1.0  # share of the goal allowed now
    cool_since: float | None = None

    def reset(self) -> None:
        self.scale, self.cool_since = 1.0, None

    def update(self, hottest_c: float, duty_pct: float | None, now: float, threshold_c: float) -> str | None:
        """One window: ``threshold_c`` is "hot" less the headroom. Returns why the scale moved (None: it did not)."""
        near_full = duty_pct is None or duty_pct >= NEAR_FULL_DUTY_PCT
        if hottest_c >= threshold_c and near_full and self.scale > FLOOR:
            self.scale = max(FLOOR, self.scale - STEP)
            self.cool_since = None
            return f"hottest {hottest_c:.1f} C at or over {threshold_c:.1f} C with fans at {duty_pct or 0:.0f} %: " \
                f"goal at {self.scale:.0%}"
        if self.scale < 1.0 and hottest_c < threshold_c - COOL_MARGIN_C and not near_full:
            self.cool_since = self.cool_since if self.cool_since is not None else now
            if now - self.cool_since >= RECOVER_S:
                self.scale = min(1.0, self.scale + 0.01)
                self.cool_since = now
                return f"cool for {RECOVER_S / 60:.0f} min: goal back to {self.scale:.0%}"
        return None
