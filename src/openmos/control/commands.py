"""Typed device commands. Each validates itself on construction, so a command that exists is in range.

``command_from_wire`` is the one parser for commands arriving as an action name plus arguments (fleet bus,
REST bodies, cgminer parameters): every number is checked for type, finiteness and range there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from openmos.control.errors import InvalidCommand

# The one source of the bounds of a device's performance target (commands, REST schema, agent config, cgminer and
# MQTT parsers all read these): far above any single device, so 1e400-style inputs stop before reaching hardware.
MAX_WATTS = 100_000.0
MIN_TARGET_W = 1.0
MAX_THS = 100_000.0
MIN_TARGET_THS = 1e-9
MAX_LOCATE_S = 3600.0
MAX_POOLS = 8
MAX_TEXT = 256
COOLING_MODES = ("auto", "manual", "immersion", "hydro")


def _number(value: object, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidCommand(f"{name} must be a number, got {type(value).__name__}")
    try:
        x = float(value)
    except (ValueError, OverflowError):
        raise InvalidCommand(f"{name} must be a number") from None  # errors never echo the input
    if not math.isfinite(x) or not lo <= x <= hi:
        raise InvalidCommand(f"{name} must be within [{lo:g}, {hi:g}]")
    return x


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT or any(c in value for c in "\r\n\x00"):
        raise InvalidCommand(f"{name} must be a single-line string of 1..{MAX_TEXT} characters")
    return value


@dataclass(frozen=True)
class Pause:
    """Operator hold: stop hashing until ``Resume``."""


@dataclass(frozen=True)
class Resume:
    """Leave pause and sleep; back to full performance."""


@dataclass(frozen=True)
class Sleep:
    """Lowest power (boards off where the hardware can); the same as ``Curtail(fraction=0)``."""


@dataclass(frozen=True)
class Reboot:
    """Restart the device's mining (the agent reconnects its pools; stock miners reboot)."""


@dataclass(frozen=True)
class Curtail:
    """Run at a fraction of the configured target, or at a wall power; exactly one of the two."""

    fraction: float | None = None
    watts: float | None = None

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.watts is None):
            raise InvalidCommand("curtail needs exactly one of fraction or watts")
        if self.fraction is not None:
            object.__setattr__(self, "fraction", _number(self.fraction, "fraction", 0.0, 1.0))
        if self.watts is not None:
            object.__setattr__(self, "watts", _number(self.watts, "watts", 0.0, MAX_WATTS))

    @property
    def is_sleep(self) -> bool:
        return (self.fraction if self.fraction is not None else self.watts) == 0.0


@dataclass(frozen=True)
class SetTarget:
    """A new base performance target: wall power, valid hashrate or a named profile; exactly one."""

    power_w: float | None = None
    hashrate_ths: float | None = None
    profile: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.power_w, self.hashrate_ths, self.profile) if v is not None]
        if len(given) != 1:
            raise InvalidCommand("a target needs exactly one of power_w, hashrate_ths or profile")
        if self.power_w is not None:
            object.__setattr__(self, "power_w", _number(self.power_w, "power_w", MIN_TARGET_W, MAX_WATTS))
        if self.hashrate_ths is not None:
            ths = _number(self.hashrate_ths, "hashrate_ths", MIN_TARGET_THS, MAX_THS)
            object.__setattr__(self, "hashrate_ths", ths)
        if self.profile is not None:
            _text(self.profile, "profile")


@dataclass(frozen=True)
class PoolSpec:
    url: str
    user: str
    password: str = "x"

    def __post_init__(self) -> None:
        _text(self.url, "pool url")
        _text(self.user, "pool user")
        if self.password:
            _text(self.password, "pool password")


@dataclass(frozen=True)
class SetPools:
    pools: tuple[PoolSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 1 <= len(self.pools) <= MAX_POOLS:
            raise InvalidCommand(f"give 1..{MAX_POOLS} pools")


@dataclass(frozen=True)
class SetCooling:
    mode: str = "auto"
    duty_pct: float | None = None  # for "manual"

    def __post_init__(self) -> None:
        if self.mode not in COOLING_MODES:
            raise InvalidCommand(f"cooling mode must be one of {', '.join(COOLING_MODES)}")
        if self.duty_pct is not None:
            object.__setattr__(self, "duty_pct", _number(self.duty_pct, "duty_pct", 0.0, 100.0))
        elif self.mode == "manual":
            raise InvalidCommand("manual cooling needs duty_pct")


@dataclass(frozen=True)
class Locate:
    seconds: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", _number(self.seconds, "seconds", 0.0, MAX_LOCATE_S))


@dataclass(frozen=True)
class SetFrequency:
    """All chips of one board at a fixed clock (cgminer ``ascset N,freq,MHz``); -1 means every board."""

    board: int
    mhz: float

    def __post_init__(self) -> None:
        if isinstance(self.board, bool) or not isinstance(self.board, int) or not -1 <= self.board < 1024:
            raise InvalidCommand("board must be an integer index (or -1 for all)")
        object.__setattr__(self, "mhz", _number(self.mhz, "mhz", 1.0, 10_000.0))


Command = Pause | Resume | Sleep | Reboot | Curtail | SetTarget | SetPools | SetCooling | Locate | SetFrequency

_NAMES: dict[type, str] = {Pause: "pause", Resume: "resume", Sleep: "sleep", Reboot: "reboot", Curtail: "curtail",
                           SetTarget: "set_target", SetPools: "set_pools", SetCooling: "set_cooling",
                           Locate: "locate", SetFrequency: "set_frequency"}
ACTIONS = (*_NAMES.values(), "set_power")


def command_name(command: Command) -> str:
    return _NAMES[type(command)]


def _opt(args: Mapping[str, object], key: str, lo: float, hi: float) -> float | None:
    value = args.get(key)
    return None if value is None else _number(value, key, lo, hi)


def command_from_wire(action: str, args: Mapping[str, object] | None = None) -> Command:
    """Parse an action and its (untrusted) arguments into a typed command; ``InvalidCommand`` says why not.

    ``set_power`` (watts) is the fleet's historical name for ``SetTarget(power_w=...)``.
    """
    a: Mapping[str, object] = args if isinstance(args, Mapping) else {}
    simple: dict[str, Command] = {"pause": Pause(), "resume": Resume(), "sleep": Sleep(), "reboot": Reboot()}
    if action in simple:
        return simple[action]
    if action == "curtail":
        return Curtail(fraction=_opt(a, "fraction", 0.0, 1.0), watts=_opt(a, "watts", 0.0, MAX_WATTS))
    if action == "set_power":
        return SetTarget(power_w=_number(a.get("watts"), "watts", MIN_TARGET_W, MAX_WATTS))
    if action == "set_target":
        profile = a.get("profile")
        return SetTarget(power_w=_opt(a, "power_w", MIN_TARGET_W, MAX_WATTS),
                         hashrate_ths=_opt(a, "hashrate_ths", MIN_TARGET_THS, MAX_THS),
                         profile=None if profile is None else _text(profile, "profile"))
    if action == "set_pools":
        raw = a.get("pools")
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_POOLS:
            raise InvalidCommand(f"pools must be a list of 1..{MAX_POOLS} objects")
        specs = []
        for p in raw:
            if not isinstance(p, Mapping):
                raise InvalidCommand("each pool must be an object with url and user")
            specs.append(PoolSpec(_text(p.get("url"), "pool url"), _text(p.get("user"), "pool user"),
                                  _text(p.get("password", "x"), "pool password")))
        return SetPools(tuple(specs))
    if action == "set_cooling":
        return SetCooling(_text(a.get("mode", "auto"), "mode"), _opt(a, "duty_pct", 0.0, 100.0))
    if action == "locate":
        seconds = _opt(a, "seconds", 0.0, MAX_LOCATE_S)
        return Locate(60.0 if seconds is None else seconds)
    if action == "set_frequency":
        board = a.get("board", -1)
        if isinstance(board, bool) or not isinstance(board, int):
            raise InvalidCommand("board must be an integer index (or -1 for all)")
        return SetFrequency(board, _number(a.get("mhz"), "mhz", 1.0, 10_000.0))
    raise InvalidCommand(f"unknown action {str(action)[:40]!r}")
