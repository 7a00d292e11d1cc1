"""One read model of a running agent, shared by the cgminer API, REST, metrics and the web page.

The status document is a typed object (:class:`DeviceStatus`, pydantic) built here and turned into JSON only
at the edges (the REST reply, the SSE stream), so ``/openapi.json`` shows its schema.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, WrapSerializer

from openmos import __version__
from openmos.control import DeviceData
from openmos.miner.agent import MiningAgent
from openmos.miner.control import AgentControl
from openmos.tuning.state import TunerStatus


@dataclass(frozen=True)
class ChipView:
    index: int
    frequency_mhz: float | None
    nonces: int
    errors: int
    enabled: bool


@dataclass(frozen=True)
class BoardView:
    index: int
    hashrate_ths: float
    temperatures_c: list[float]
    chip_temperatures_c: list[float]
    voltage_v: float | None
    enabled: bool
    chips: list[ChipView]

    @property
    def hardware_errors(self) -> int:
        return sum(c.errors for c in self.chips)


@dataclass(frozen=True)
class PoolView:
    index: int
    group: str
    url: str
    user: str
    status: str  # Alive / Dead / Disabled
    active: bool
    priority: int
    quota: int
    accepted: int
    rejected: int
    stale: int
    difficulty: float
    accepted_difficulty: float
    rejected_difficulty: float
    best_share: float
    last_share_time: float
    has_vmask: bool
    queued: int
    lost: int
    # share accounting beyond cgminer's (see miner.pool_manager): never sent because their block was superseded,
    # over the submit rate limit, found for a session the pool did not resume, re-sent shares the pool had
    superseded: int = 0
    throttled: int = 0
    unrecoverable: int = 0
    resent_duplicates: int = 0
    resumed_sessions: int = 0
    difficulty_refused: int = 0  # mining.set_difficulty values refused (non-finite, outside the sane range)
    mining_difficulty: float = 0.0  # what the hardware mines at: the pool's, raised by the share-rate governor
    governor_active: bool = False  # the governor is raising the difficulty above the pool's
    quality_failures: int = 0
    backoff_s: float = 0.0  # current back-off length
    bad_for_s: float = 0.0  # seconds left before this pool is tried again (0: usable)
    last_error: str = ""
    difficulty_governed: int = 0  # accepted values the share-rate governor raises (too many shares/s)
    difficulty_slow: int = 0  # accepted values meaning one share per more than slow_share_hours
    liveness_probes: int = 0  # probes sent while the pool was silent with nothing at stake (stall_probe_s)
    probe_answers: int = 0  # of them answered
    stall_suspicions: int = 0  # times the work left this pool on a suspected stall


class _Status(BaseModel):
    model_config = ConfigDict(frozen=True)


class DeviceIdentity(_Status):
    firmware: str = "OpenMOS"
    version: str
    hardware: str
    uptime_s: int
    paused: bool
    hashrate_source: Literal["modelled", "measured"]


class HashrateWindows(_Status):
    """TH/s over the trailing 5 s, 1 min and 15 min."""

    last_5s: float = Field(serialization_alias="5s")
    last_1m: float = Field(serialization_alias="1m")
    last_15m: float = Field(serialization_alias="15m")


class ShareCounts(_Status):
    """Shares found and what became of them (see ``DeviceView.share_accounting``; later keys pass through)."""

    model_config = ConfigDict(extra="allow")
    found: int
    hardware_errors: int
    accepted: int
    rejected: int
    superseded: int = 0
    queued: int = 0
    lost: int = 0
    unrecoverable: int = 0
    resent_duplicates: int = 0
    resumed_sessions: int = 0
    throttled: int = 0
    difficulty_refused: int = 0
    governor_active: bool = False
    governor_max_share_rate: float = 0.0
    submit_limit_refused: int = 0
    pools_backed_off: int = 0
    liveness_probes: int = 0
    probe_answers: int = 0
    stall_suspicions: int = 0


class FanReading(_Status):
    index: int
    rpm: int
    duty_pct: float


def _device_data(data: DeviceData, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
    doc: dict[str, Any] = handler(data)
    return {**doc, "paused": data.paused}  # the fleet's historical flag, as ``control.to_wire`` adds it


class DeviceStatus(_Status):
    """``GET /api/v1/status`` and every ``/api/v1/stream`` event."""

    device: DeviceIdentity
    hashrate_ths: HashrateWindows
    power_w: float | None
    efficiency_j_per_th: float | None
    hottest_c: float | None
    shares: ShareCounts
    tuner: TunerStatus | None
    pools: list[PoolView]
    fans: list[FanReading]
    locate: bool
    control: Annotated[DeviceData, WrapSerializer(_device_data)]

    def to_json(self) -> str:
        """The wire form (aliases such as ``"5s"``; NaN/inf as null)."""
        return self.model_dump_json(by_alias=True)


class DeviceView:
    """Live figures of one agent (hashrate windows come from the hardware's hash counters) and its control
    surface, through which every API changes the device."""

    def __init__(self, agent: MiningAgent, started_at: float | None = None, control: AgentControl | None = None
                 ) -> None:
        self.agent = agent
        self.started_at = started_at or time.time()
        self.control = control or AgentControl(agent)

    @property
    def version(self) -> str:
        return __version__

    @property
    def uptime_s(self) -> int:
        return int(time.time() - self.started_at)

    def hashrate(self, window: float) -> float:
        """H/s over the trailing window."""
        return self.agent.hashrate.rate(window)

    @property
    def modelled(self) -> bool:
        return self.agent.telemetry().modelled

    def boards(self) -> list[BoardView]:
        tel = self.agent.telemetry()
        per_board_rate: list[float] = []
        total = sum(b.hashes for b in tel.boards)
        rate = self.hashrate(60)
        for b in tel.boards:
            per_board_rate.append(rate * b.hashes / total / 1e12 if total else 0.0)
        return [BoardView(b.index, per_board_rate[i], list(b.temperatures_c), list(b.chip_temperatures_c),
                          b.voltage_v, b.enabled,
                          [ChipView(c.index, c.frequency_mhz, c.nonces, c.errors, c.enabled) for c in b.chips])
                for i, b in enumerate(tel.boards)]

    def pools(self) -> list[PoolView]:
        out: list[PoolView] = []
        index = 0
        now = time.monotonic()
        for group in self.agent.pools.groups:
            for conn in group.connections:
                c = conn.counters
                client = conn.client
                status = "Disabled" if not conn.enabled else conn.status
                difficulty = client.difficulty if client else 0.0
                mining = self.agent.mining_difficulty(difficulty) if client else 0.0
                refused, governed, slow = conn.difficulty_refused, conn.difficulty_governed, conn.difficulty_slow
                probes, answers = conn.probe_counts()
                if client is not None and not client.closed.is_set():
                    refused += getattr(client, "difficulty_rejections", 0)
                    governed += getattr(client, "difficulty_governed", 0)
                    slow += getattr(client, "difficulty_slow", 0)
                out.append(PoolView(index, group.name, conn.endpoint.url, conn.endpoint.user, status,
                                    group.active is conn, conn.priority, group.quota, c.accepted, c.rejected,
                                    c.stale, difficulty, c.accepted_difficulty,
                                    c.rejected_difficulty, c.best_share, c.last_share_time,
                                    bool(client and client.version_mask), len(conn.outbox), conn.lost_shares,
                                    conn.stale_dropped, conn.throttled, conn.unrecoverable, conn.resent_duplicates,
                                    conn.resumed_sessions, refused, mining, mining > difficulty,
                                    conn.quality_failures, conn.backoff_s, max(0.0, conn.bad_until - now),
                                    conn.last_error[:200], governed, slow, probes, answers,
                                    conn.stall_suspicions))
                index += 1
        return out

    def share_accounting(self, pools: list[PoolView] | None = None) -> dict[str, int | float | bool]:
        """What became of every share besides accepted/rejected/stale, and the governor's state, in one place
        for REST, the cgminer summary and Prometheus."""
        pools = self.pools() if pools is None else pools
        stats = self.agent.stats
        groups = self.agent.pools.groups
        return {
            "superseded": stats.superseded_nonces + sum(p.superseded for p in pools),
            "queued": sum(p.queued for p in pools),
            "lost": sum(p.lost for p in pools) + stats.dropped_shares,
            "unrecoverable": sum(p.unrecoverable for p in pools),
            "resent_duplicates": sum(p.resent_duplicates for p in pools),
            "resumed_sessions": sum(p.resumed_sessions for p in pools),
            "throttled": sum(p.throttled for p in pools),
            "difficulty_refused": sum(p.difficulty_refused for p in pools),
            "difficulty_governed": sum(p.difficulty_governed for p in pools),
            "difficulty_slow": sum(p.difficulty_slow for p in pools),
            "governor_active": any(p.governor_active for p in pools if p.active),
            "governor_max_share_rate": self.agent.config.stratum.max_share_rate,
            "submit_limit_refused": sum(g.submit_limit.refused for g in groups),
            "pools_backed_off": sum(1 for p in pools if p.bad_for_s > 0),
            "liveness_probes": sum(p.liveness_probes for p in pools),
            "probe_answers": sum(p.probe_answers for p in pools),
            "stall_suspicions": sum(p.stall_suspicions for p in pools),
        }

    @property
    def power_w(self) -> float | None:
        return self.agent.telemetry().input_power_w

    def fans(self) -> list[tuple[int, int, float]]:
        return [(f.index, f.rpm, f.duty_pct) for f in self.agent.telemetry().fans]

    def status(self) -> DeviceStatus:
        """The whole status document, typed (JSON only at the edges)."""
        agent = self.agent
        power = self.power_w
        ths = self.hashrate(60) / 1e12
        tuner = agent.tuner
        boards = self.boards()
        pools = self.pools()
        temps = [t for b in boards for t in (b.chip_temperatures_c or b.temperatures_c)]
        return DeviceStatus(
            device=DeviceIdentity(version=self.version, hardware=agent.hardware.model, uptime_s=self.uptime_s,
                                  paused=agent.paused, hashrate_source="modelled" if self.modelled else "measured"),
            hashrate_ths=HashrateWindows(last_5s=self.hashrate(5) / 1e12, last_1m=ths,
                                         last_15m=self.hashrate(900) / 1e12),
            power_w=power, efficiency_j_per_th=(power / ths) if power and ths else None,
            hottest_c=max(temps) if temps else None,
            shares=ShareCounts.model_validate({
                "found": agent.stats.shares_found, "hardware_errors": agent.stats.hardware_errors,
                "accepted": sum(p.accepted for p in pools), "rejected": sum(p.rejected for p in pools),
                **self.share_accounting(pools)}),
            tuner=tuner.status if tuner else None,
            pools=pools,
            fans=[FanReading(index=i, rpm=rpm, duty_pct=duty) for i, rpm, duty in self.fans()],
            locate=self.control.locating,
            control=self.control.get_data(),
        )
