"""One read model of a running agent, shared by the cgminer API, REST, metrics and the web page."""

from __future__ import annotations

import time
from dataclasses import dataclass

from openmos import __version__
from openmos.miner.agent import MiningAgent
from openmos.miner.control import AgentControl


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
        for group in self.agent.pools.groups:
            for conn in group.connections:
                c = conn.counters
                client = conn.client
                status = "Disabled" if not conn.enabled else conn.status
                out.append(PoolView(index, group.name, conn.endpoint.url, conn.endpoint.user, status,
                                    group.active is conn, conn.priority, group.quota, c.accepted, c.rejected,
                                    c.stale, client.difficulty if client else 0.0, c.accepted_difficulty,
                                    c.rejected_difficulty, c.best_share, c.last_share_time,
                                    bool(client and client.version_mask), len(conn.outbox), conn.lost_shares))
                index += 1
        return out

    @property
    def power_w(self) -> float | None:
        return self.agent.telemetry().input_power_w

    def fans(self) -> list[tuple[int, int, float]]:
        return [(f.index, f.rpm, f.duty_pct) for f in self.agent.telemetry().fans]
