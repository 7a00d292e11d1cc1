"""The tuner's options, its reported status, and the decision log (what it did and why)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

log = logging.getLogger("openmos.tuning")

DECISIONS_KEPT = 50


class TunerState(StrEnum):
    DISABLED = "DISABLED"
    TUNING = "TUNING"
    STABLE = "STABLE"
    ERROR = "ERROR"
    SLEEPING = "SLEEPING"


@dataclass(frozen=True)
class TunerOptions:
    nonces_per_s: float = 60.0  # per chip, chooses the ticket difficulty
    window_s: float = 10.0  # measurement window while tuning
    stable_window_s: float = 30.0  # measurement window once stable
    tick_s: float = 2.0  # cooling control period
    settle_s: float | None = None  # wait after a change before measuring (None: the hardware's own figure)
    sweep_step: float = 0.02  # relative frequency step in sweeps
    err_ok: float = 0.005  # keep climbing below this error fraction
    err_bad: float = 0.02  # past the limit above this
    trim_high: float = 0.008  # a chip above this error fraction steps down
    trim_low: float = 0.0015  # a chip below this (with enough counts) may step up
    max_overshoot: float = 0.06  # how far past its swept limit a chip that never errs may climb
    start_margin: float = 0.01
    power_tolerance: float = 0.005
    hold_tolerance: float = 0.002  # once holding: mean power of windows at one setting kept this close
    efficiency_tolerance: float = 0.004  # J/TH profile: stay this far under the ceiling
    dead_error: float = 0.5
    max_converge_windows: int = 60
    retune_shift_c: float = 8.0  # re-tune when the hottest chip moved this far since the last tune
    psu_headroom: float = 0.98  # never plan above this share of the PSU's rated output
    thermal_headroom_c: float = 3.0  # overclock governor: back off this far below "hot" with fans near full
    samples_kept: int = 150  # power-model samples (recent ones: ageing and seasons move the truth)


@dataclass(frozen=True)
class Decision:
    """One control decision with the reason for it (simulated or wall-clock seconds)."""

    at_s: float
    action: str
    reason: str

    def __str__(self) -> str:
        return f"t={self.at_s:.0f}s {self.action}: {self.reason}"


@dataclass
class TunerStatus:
    state: TunerState = TunerState.DISABLED
    phase: str = "idle"
    percent: float = 0.0
    message: str = ""
    target: str = ""
    effective_target: str = ""
    power_w: float = 0.0
    hashrate_ths: float = 0.0
    hottest_c: float = 0.0
    fan_duty_pct: float | None = None
    dps_steps: int = 0
    governor_scale: float = 1.0  # overclock / efficiency governor on top of the target (1 = none)
    board_voltage: list[float] = field(default_factory=list)
    dead_chips: list[tuple[int, int]] = field(default_factory=list)
    hazard_ratio: float | None = None  # modelled chip failure-rate ratio vs running at the normal target
    events: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def decide(self, at_s: float, action: str, reason: str) -> Decision:
        """Record (and log) a decision; the status keeps the most recent ones."""
        decision = Decision(at_s, action, reason)
        self.decisions = [*self.decisions[-(DECISIONS_KEPT - 1):], decision]
        log.info("tuner decision: %s", decision)
        return decision


@dataclass(frozen=True)
class CurvePoint:
    power_w: float
    hashrate_ths: float
    j_per_th: float
    source: str  # "measured" (a profile that ran) or "estimated" (from the learned chip model)
