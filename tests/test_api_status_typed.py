"""The REST status is a typed object (``DeviceStatus``) serialised only at the edge: its schema is in the
OpenAPI document, its JSON keeps the historical shape, and the live stream sends the same document."""

from __future__ import annotations

import json
import math

import httpx

from openmos.api.view import DeviceStatus
from openmos.control import to_wire

from api_stack import running_device

TOP = {"device", "hashrate_ths", "power_w", "efficiency_j_per_th", "hottest_c", "shares", "tuner", "pools", "fans",
       "locate", "control"}


async def test_status_is_typed_with_a_stable_shape_and_schema() -> None:
    async with running_device(performance={"profile": "eco"}) as dev, \
            httpx.AsyncClient(base_url=dev.rest_url, timeout=30) as client:
        typed = dev.apis.view.status()
        assert isinstance(typed, DeviceStatus) and typed.device.hashrate_source == "modelled"
        status = (await client.get("/api/v1/status")).json()
        assert set(status) == TOP
        assert set(status["device"]) == {"firmware", "version", "hardware", "uptime_s", "paused", "hashrate_source"}
        assert set(status["hashrate_ths"]) == {"5s", "1m", "15m"} and status["hashrate_ths"]["1m"] > 0
        assert {"found", "accepted", "rejected", "hardware_errors", "lost", "governor_active"} <= set(status["shares"])
        assert status["pools"][0]["user"] == "api.s21" and isinstance(status["fans"][0]["rpm"], int)
        # The control surface's reading: the same keys ``to_wire`` gives, enums as their values, plus "paused".
        wire = to_wire(dev.apis.view.control.get_data())
        assert set(status["control"]) == set(wire) and status["control"]["state"] == wire["state"]
        assert status["control"]["paused"] is False and isinstance(status["control"]["pools"], list)
        tuner = status["tuner"]
        assert tuner is not None and isinstance(tuner["state"], str) and isinstance(tuner["decisions"], list)
        schema = (await client.get("/openapi.json")).json()
        reply = schema["paths"]["/api/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]
        assert reply["schema"]["$ref"].endswith("/DeviceStatus")
        parts = schema["components"]["schemas"]
        assert set(parts["DeviceStatus"]["properties"]) == TOP
        assert set(parts["HashrateWindows"]["properties"]) == {"5s", "1m", "15m"}
        assert "hashrate_ths" in parts["DeviceData"]["properties"] and "PoolView" in parts
        async with client.stream("GET", "/api/v1/stream", params={"interval": 0.2}) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    assert set(event) == TOP and set(event["hashrate_ths"]) == {"5s", "1m", "15m"}
                    break


def test_non_finite_figures_become_null_not_invalid_json() -> None:
    """A sensor's NaN must not turn the whole document into invalid JSON (``NaN`` is not JSON)."""
    from openmos.api.view import DeviceIdentity, HashrateWindows, ShareCounts
    from openmos.control import DeviceData, RunState

    status = DeviceStatus(
        device=DeviceIdentity(version="x", hardware="h", uptime_s=1, paused=False, hashrate_source="measured"),
        hashrate_ths=HashrateWindows(last_5s=math.nan, last_1m=1.0, last_15m=math.inf), power_w=math.nan,
        efficiency_j_per_th=None, hottest_c=None, shares=ShareCounts(found=0, hardware_errors=0, accepted=0,
                                                                     rejected=0),
        tuner=None, pools=[], fans=[], locate=False, control=DeviceData("d", RunState.MINING, 1.0, None))
    doc = json.loads(status.to_json())
    assert doc["hashrate_ths"] == {"5s": None, "1m": 1.0, "15m": None} and doc["power_w"] is None
    assert doc["control"]["state"] == "mining" and doc["control"]["paused"] is False
