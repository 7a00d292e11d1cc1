"""Slow clients on the HTTP APIs (device REST and fleet dashboard), attacked over raw sockets.

Attacks: headers sent one byte every 0.2 s (slowloris), a body that never ends, the same on the second request
of a keep-alive connection. Each connection is closed after the overall request deadline (here 1 s; 10 s by
default) while a live event stream opened normally keeps flowing past it, and the API still answers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from openmos.api import server
from openmos.api.auth import AuthStore
from openmos.api.service import DeviceApis
from openmos.base.net import free_local_port
from openmos.fleet.web.app import create_fleet_app
from test_api_hardening import idle_agent, serving
from test_fleet_security import plain_fleet

from helpers import wait_for

DEADLINE_S = 1.0
GIVE_UP_S = 60.0  # far beyond the deadline: only a connection held "forever" gets here


async def trickle_until_closed(port: int, start: bytes, drip: bytes = b"X", keep_alive_first: bytes = b"") -> float:
    """Send ``start`` then one byte every 0.2 s until the server closes; seconds the connection lasted."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    try:
        if keep_alive_first:  # one honest request first, answered, on the same connection
            writer.write(keep_alive_first)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GIVE_UP_S)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await asyncio.wait_for(reader.readexactly(length), GIVE_UP_S)
            began = time.monotonic()
        writer.write(start)
        await writer.drain()
        while time.monotonic() - began < GIVE_UP_S:
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                writer.write(drip)
                try:
                    await writer.drain()
                except ConnectionError:
                    return time.monotonic() - began
                continue
            except ConnectionError:
                return time.monotonic() - began
            if data == b"":
                return time.monotonic() - began
        raise AssertionError(f"connection still open after {GIVE_UP_S} s of trickling")
    finally:
        writer.close()


async def attack(port: int, host: str, write_path: str, read_path: str) -> None:
    slow_headers = f"GET / HTTP/1.1\r\nHost: {host}\r\n".encode()
    endless_body = (f"POST {write_path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: 1000\r\n\r\n{{\"user\": \"").encode()
    honest = f"GET {read_path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    lasted = await asyncio.gather(
        *(trickle_until_closed(port, slow_headers) for _ in range(5)),
        *(trickle_until_closed(port, endless_body) for _ in range(5)),
        trickle_until_closed(port, slow_headers, keep_alive_first=honest))
    assert all(seconds >= DEADLINE_S * 0.9 for seconds in lasted), lasted  # the deadline, not an early error


@asynccontextmanager
async def short_deadline(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    monkeypatch.setattr(server, "REQUEST_DEADLINE_S", DEADLINE_S)
    yield


async def test_device_rest_cuts_slow_clients_but_not_live_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    async with short_deadline(monkeypatch), serving(idle_agent()) as apis:
        assert apis.http.uvicorn.config.limit_concurrency == server.MAX_HTTP_CONNECTIONS  # the connection cap
        assert apis.app.state.ctx.max_streams > 0  # and the live-stream cap (test_api_hardening exercises it)
        port = apis.rest_port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            async with client.stream("GET", "/api/v1/stream", params={"interval": 0.2}) as stream:
                events = 0
                began = time.monotonic()
                await attack(port, "localhost", "/api/v1/auth/login", "/api/v1/status")
                async for line in stream.aiter_lines():  # opened before the attack, still flowing after it
                    events += line.startswith("data:")
                    if events >= 3 and time.monotonic() - began > 2 * DEADLINE_S:
                        break
            assert (await client.get("/api/v1/status")).status_code == 200


async def test_fleet_rest_cuts_slow_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with short_deadline(monkeypatch), plain_fleet(tmp_path, {"north": ["d0"]}) as (service, _):
        port = free_local_port()
        fleet = uvicorn.Server(server.http_config(create_fleet_app(service, AuthStore(None)), "127.0.0.1", port))
        task = asyncio.create_task(fleet.serve())
        try:
            await wait_for(lambda: fleet.started, 20, "the fleet dashboard")
            await attack(port, "localhost", "/api/v1/auth/login", "/api/fleet/overview")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                assert (await client.get("/api/fleet/overview")).status_code == 200
        finally:
            fleet.should_exit = True
            await task


def test_every_http_api_is_served_with_the_deadline() -> None:
    """The device API, the fleet dashboard (`mos fleet demo`), the proxy and the JD dashboard all build their
    server here (``HttpServer`` runs ``http_config``)."""
    import inspect

    from openmos.cli import fleet
    from openmos.jd import api as jd_api
    from openmos.proxy import api as proxy_api

    for module in (fleet, proxy_api, jd_api):
        source = inspect.getsource(module)
        assert ("http_config(" in source or "HttpServer(" in source) and "uvicorn.Config(" not in source
    assert "HttpServer(" in inspect.getsource(DeviceApis)
    assert "http_config(" in inspect.getsource(server.HttpServer)
    with pytest.raises(ValueError):
        server.http_config(object(), "127.0.0.1", 0, request_deadline_s=float("nan"))


async def test_http_server_warnings_go_through_the_application_logging(caplog: pytest.LogCaptureFixture) -> None:
    """uvicorn's own log handler printed "WARNING:  Invalid HTTP request received." on stderr, outside the
    agent's log format (no time) and out of reach of its log buffer."""
    with caplog.at_level(logging.WARNING):
        async with serving(idle_agent()) as apis:
            reader, writer = await asyncio.open_connection("127.0.0.1", apis.rest_port)
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
            assert (await asyncio.wait_for(reader.read(), GIVE_UP_S)).startswith(b"HTTP/1.1 400")
            writer.close()
            await wait_for(lambda: any(r.name.startswith("uvicorn") and "Invalid HTTP request" in r.getMessage()
                                       for r in caplog.records), 10, "uvicorn's warning in the application log")
