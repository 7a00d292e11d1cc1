"""Performance targets: watts at the wall or terahashes, presets and relative steps."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TargetKind(StrEnum):
    POWER = "power"  # W at the wall
    HASHRATE = "hashrate"  # TH/s of valid hashes
    EFFICIENCY = "efficiency"  # "max hashrate at J/TH <= X": value is the J/TH ceiling at the wall


# Presets as a fraction of the hardware's stock (nameplate) power, like LuxOS profiles / Braiins targets.
PRESETS: dict[str, float] = {"eco": 0.70, "balanced": 0.85, "performance": 1.00}


@dataclass(frozen=True)
class PerformanceTarget:
    kind: TargetKind
    value: float

    def __post_init__(self) -> None:
        if not (self.value > 0 and self.value < float("inf")):
            raise ValueError(f"{self.kind.value} target must be positive, got {self.value}")

    @classmethod
    def power(cls, watts: float) -> PerformanceTarget:
        return cls(TargetKind.POWER, float(watts))

    @classmethod
    def hashrate(cls, ths: float) -> PerformanceTarget:
        return cls(TargetKind.HASHRATE, float(ths))

    @classmethod
    def efficiency(cls, j_per_th: float) -> PerformanceTarget:
        """The most hashrate whose wall J/TH stays at or under ``j_per_th``."""
        return cls(TargetKind.EFFICIENCY, float(j_per_th))

    @classmethod
    def preset(cls, name: str, stock_power_w: float) -> PerformanceTarget:
        try:
            return cls.power(round(PRESETS[name] * stock_power_w))
        except KeyError:
            raise ValueError(f"unknown profile {name!r}; use {', '.join(PRESETS)} or a custom target") from None

    @classmethod
    def choose(cls, *, power_w: float | None = None, hashrate_ths: float | None = None,
               profile: str | None = None, nameplate_w: float = 0.0,
               j_per_th: float | None = None) -> PerformanceTarget:
        """The one target given: a wall power, a hashrate, a J/TH ceiling, or a preset profile of ``nameplate_w``."""
        if power_w is not None:
            return cls.power(power_w)
        if hashrate_ths is not None:
            return cls.hashrate(hashrate_ths)
        if j_per_th is not None:
            return cls.efficiency(j_per_th)
        if profile is not None:
            return cls.preset(profile, nameplate_w)
        raise ValueError("give a power, hashrate, J/TH or profile target")

    def scaled(self, factor: float) -> PerformanceTarget:
        return PerformanceTarget(self.kind, self.value * factor)

    def step(self, percent: float) -> PerformanceTarget:
        """A relative step, e.g. +5 or -10 (%)."""
        return self.scaled(1 + percent / 100.0)

    @property
    def key(self) -> str:
        if self.kind is TargetKind.EFFICIENCY:
            return f"efficiency-{self.value:.2f}JTH"
        unit = "W" if self.kind is TargetKind.POWER else "THs"
        return f"{self.kind.value}-{self.value:.0f}{unit}"

    def __str__(self) -> str:
        if self.kind is TargetKind.EFFICIENCY:
            return f"max hashrate at <= {self.value:.2f} J/TH"
        return f"{self.value:,.0f} W" if self.kind is TargetKind.POWER else f"{self.value:,.1f} TH/s"
