"""The dashboard's per-tag aggregate (/api/fleet/by-tag) is an SQL aggregation over the whole fleet: it runs off
the event loop, so the controller (bus replies, telemetry, other requests) keeps answering meanwhile."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from openmos.api.auth import AuthStore
from openmos.base.net import free_local_port
from openmos.fleet.bus import BusConfig
from openmos.fleet.service import FleetService
from openmos.fleet.store import Sample
from openmos.fleet.web.app import create_fleet_app
from openmos.security.signing import generate_keypair


async def test_by_tag_runs_off_the_event_loop(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "fleet.pem", tmp_path / "fleet.pub")
    service = FleetService(BusConfig(listen=[f"tcp/127.0.0.1:{free_local_port()}"]),
                           f"sqlite:///{tmp_path / 'fleet.db'}", (tmp_path / "fleet.pem").read_bytes(),
                           tmp_path / "audit.jsonl")
    store = service.store
    now = time.time()
    devices = [(f"site-{i % 4}", f"m{i:04d}") for i in range(400)]
    for site, device in devices:
        store.upsert_device({"device": device, "site": site, "model": "s21", "tags": {"rack": "r1"}})
    start = now - 2 * 3600
    store.add_samples(Sample(site, device, start + t, 200.0, 3500.0, 65.0, True)
                      for t in range(0, 7200, 300) for site, device in devices)
    store.rollup(until=now)
    expected = store.aggregate_by_tag("site", 3600, since=now - 86400)
    assert set(expected) == {"site-0", "site-1", "site-2", "site-3"}

    loop = asyncio.get_running_loop()
    query_started = asyncio.Event()
    loop_answered = threading.Event()
    seen: dict[str, Any] = {}
    real = store.aggregate_by_tag

    def slow_aggregate(tag: str, bucket_s: int, since: float) -> dict[str, dict[str, float]]:
        """The real query, held until the event loop has shown it still runs other coroutines."""
        seen["on_loop_thread"] = threading.get_ident() == loop_thread
        loop.call_soon_threadsafe(query_started.set)
        seen["loop_answered"] = loop_answered.wait(30)  # bounded: on the loop this can never be set
        return real(tag, bucket_s, since)

    async def other_work() -> None:
        await query_started.wait()
        loop_answered.set()

    loop_thread = threading.get_ident()
    store.aggregate_by_tag = slow_aggregate  # type: ignore[method-assign]
    app = create_fleet_app(service, AuthStore(None))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            other = asyncio.create_task(other_work())
            reply = await c.get("/api/fleet/by-tag", params={"tag": "site"})  # hourly buckets
        assert seen == {"on_loop_thread": False, "loop_answered": True}  # the loop ran other_work meanwhile
        assert reply.status_code == 200 and reply.json() == expected
        await asyncio.wait_for(other, 30)
    finally:
        store.close()


async def test_bucket_sizes_from_the_query_string_are_accepted_and_others_refused(tmp_path: Path) -> None:
    """``?bucket=300`` is text: the dashboard's own history chart asks for it; anything but a rollup size is 422."""
    generate_keypair(tmp_path / "fleet.pem", tmp_path / "fleet.pub")
    service = FleetService(BusConfig(listen=[f"tcp/127.0.0.1:{free_local_port()}"]),
                           f"sqlite:///{tmp_path / 'fleet.db'}", (tmp_path / "fleet.pem").read_bytes(),
                           tmp_path / "audit.jsonl")
    app = create_fleet_app(service, AuthStore(None))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            for bucket in ("300", "3600", "86400"):
                assert (await c.get("/api/fleet/series", params={"bucket": bucket})).status_code == 200
                assert (await c.get("/api/fleet/by-tag", params={"bucket": bucket})).status_code == 200
            for bad in ("1", "-300", "0", "1e400", "nan", "300.5", "x" * 10_000, "9" * 5000):
                for path in ("/api/fleet/series", "/api/fleet/by-tag"):
                    reply = await c.get(path, params={"bucket": bad})
                    assert reply.status_code == 422 and len(reply.text) < 2000
    finally:
        service.store.close()
