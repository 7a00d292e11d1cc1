"""Fast fleet polling over the cgminer API: one multi-command per device, bounded concurrency, timeouts.

Two dialects: ``openmos`` (OpenMOS devices: summary/pools/devs/temps/fans) and ``bmminer`` (stock Antminer
firmware: version/summary/stats/pools, per-chain fields in ``stats``)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

POLL_COMMAND = b'{"command":"summary+pools+devs+temps+fans"}'
BMMINER_COMMAND = b'{"command":"version+summary+stats+pools"}'


@dataclass(frozen=True)
class BoardSnapshot:
    hashrate_ths: float
    temp_c: float | None
    chip_temp_c: float | None
    chips: int


@dataclass(frozen=True)
class PoolSnapshot:
    url: str
    user: str
    accepted: int
    rejected: int
    active: bool
    alive: bool


@dataclass
class DeviceSnapshot:
    ip: str
    ok: bool
    error: str = ""
    hashrate_ths: float = 0.0
    power_w: float | None = None
    boards: int = 0
    chips: int = 0
    hottest_c: float | None = None
    fans_rpm: list[int] = field(default_factory=list)
    pool_url: str = ""
    pool_user: str = ""
    accepted: int = 0
    latency_s: float = 0.0
    expected_ths: float | None = None
    uptime_s: int | None = None
    firmware: str = ""
    board_list: list[BoardSnapshot] = field(default_factory=list)
    pools: list[PoolSnapshot] = field(default_factory=list)


def _num(value: Any, default: float = 0.0) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return default
    return x if x == x and abs(x) != float("inf") else default


def parse_bmminer(ip: str, doc: dict[str, Any], latency: float) -> DeviceSnapshot:
    """A stock bmminer (Antminer) multi-command answer: the fields pyasic's ``BMMiner`` backend reads."""
    def rows(name: str) -> list[dict[str, Any]]:
        part = doc.get(name, [{}])[0]
        value = part.get(name.upper(), []) if isinstance(part, dict) else []
        return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []

    summary = (rows("summary") or [{}])[0]
    stats = rows("stats")
    row = stats[1] if len(stats) > 1 else {}
    chains = [i for i in range(1, 17) if _num(row.get(f"chain_acn{i}")) > 0]
    boards = [BoardSnapshot(_num(row.get(f"chain_rate{i}")) / 1000, row.get(f"temp2_{i}"), row.get(f"temp{i}"),
                            int(_num(row.get(f"chain_acn{i}")))) for i in chains]
    fans = [int(_num(row.get(f"fan{i}"))) for i in range(1, 9) if _num(row.get(f"fan{i}")) > 0]
    pools = [PoolSnapshot(str(p.get("URL", "")), str(p.get("User", "")), int(_num(p.get("Accepted"))),
                          int(_num(p.get("Rejected"))), bool(p.get("Stratum Active")), p.get("Status") == "Alive")
             for p in rows("pools")]
    active = next((p for p in pools if p.active), pools[0] if pools else None)
    temps = [b.chip_temp_c for b in boards if isinstance(b.chip_temp_c, (int, float))]
    version = (rows("version") or [{}])[0]
    return DeviceSnapshot(ip, True, hashrate_ths=_num(summary.get("GHS 5s")) / 1000, boards=len(boards),
                          chips=sum(b.chips for b in boards), hottest_c=max(temps) if temps else None,
                          fans_rpm=fans, pool_url=active.url if active else "", pool_user=active.user if active else "",
                          accepted=int(_num(summary.get("Accepted"))), latency_s=latency,
                          expected_ths=_num(row.get("total_rateideal")) / 1000 or None,
                          uptime_s=int(_num(row.get("Elapsed"))), firmware=str(version.get("CompileTime", "")),
                          board_list=boards, pools=pools)


def parse_snapshot(ip: str, doc: dict[str, Any], latency: float) -> DeviceSnapshot:
    def rows(name: str) -> list[dict[str, Any]]:
        part = doc.get(name, [{}])[0]
        value = part.get(name.upper(), [])
        return value if isinstance(value, list) else []

    summary = (rows("summary") or [{}])[0]
    pools = rows("pools")
    active = next((p for p in pools if p.get("Stratum Active")), pools[0] if pools else {})
    devs = rows("devs")
    temps = [t.get("Chip", 0.0) for t in rows("temps")]
    return DeviceSnapshot(ip, True, hashrate_ths=float(summary.get("MHS 1m", 0.0)) / 1e6,
                          power_w=summary.get("Power"), boards=len(devs),
                          chips=sum(int(d.get("Chips", 0)) for d in devs), hottest_c=max(temps) if temps else None,
                          fans_rpm=[int(f.get("RPM", 0)) for f in rows("fans")], pool_url=active.get("URL", ""),
                          pool_user=active.get("User", ""), accepted=int(summary.get("Accepted", 0)),
                          latency_s=latency)


async def poll_device(ip: str, port: int = 4028, timeout_s: float = 5.0, dialect: str = "openmos"
                      ) -> DeviceSnapshot:
    began = time.perf_counter()
    command, parse = (BMMINER_COMMAND, parse_bmminer) if dialect == "bmminer" else (POLL_COMMAND, parse_snapshot)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout_s)
        try:
            writer.write(command)
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(-1), timeout_s)
        finally:
            writer.close()
        doc = json.loads(raw.rstrip(b"\x00"))
        return parse(ip, doc, time.perf_counter() - began)
    except (OSError, TimeoutError, ValueError, IndexError, AttributeError) as exc:
        return DeviceSnapshot(ip, False, error=f"{type(exc).__name__}: {exc}"[:200])


async def poll_all(ips: list[str], port: int = 4028, concurrency: int = 500, timeout_s: float = 5.0,
                   progress: Any = None, dialect: str = "openmos") -> list[DeviceSnapshot]:
    limit = asyncio.Semaphore(concurrency)

    async def one(ip: str) -> DeviceSnapshot:
        async with limit:
            snap = await poll_device(ip, port, timeout_s, dialect)
        if progress is not None:
            progress(snap)
        return snap

    return list(await asyncio.gather(*(one(ip) for ip in ips)))
