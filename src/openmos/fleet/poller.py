"""Fast fleet polling over the cgminer API: one multi-command per device, bounded concurrency, timeouts."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

POLL_COMMAND = b'{"command":"summary+pools+devs+temps+fans"}'


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


async def poll_device(ip: str, port: int = 4028, timeout_s: float = 5.0) -> DeviceSnapshot:
    began = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout_s)
        try:
            writer.write(POLL_COMMAND)
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(-1), timeout_s)
        finally:
            writer.close()
        doc = json.loads(raw.rstrip(b"\x00"))
        return parse_snapshot(ip, doc, time.perf_counter() - began)
    except (OSError, TimeoutError, ValueError, IndexError, AttributeError) as exc:
        return DeviceSnapshot(ip, False, error=f"{type(exc).__name__}: {exc}"[:200])


async def poll_all(ips: list[str], port: int = 4028, concurrency: int = 500, timeout_s: float = 5.0,
                   progress: Any = None) -> list[DeviceSnapshot]:
    limit = asyncio.Semaphore(concurrency)

    async def one(ip: str) -> DeviceSnapshot:
        async with limit:
            snap = await poll_device(ip, port, timeout_s)
        if progress is not None:
            progress(snap)
        return snap

    return list(await asyncio.gather(*(one(ip) for ip in ips)))
