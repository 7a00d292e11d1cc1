"""REST and cgminer are two edges of one control surface: the same command gives the same result."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from openmos.api.app import create_app
from openmos.api.auth import AuthStore
from openmos.api.cgminer import UNSUPPORTED, CgminerApi
from openmos.api.view import DeviceView
from openmos.base.net import AllowList
from openmos.control import RunState
from openmos.hw.cpu import CpuHardware
from openmos.miner import AgentConfig, MiningAgent

from api_stack import running_device

OWNER = "a-long-owner-password"


async def cgminer(port: int, payload: str) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload.encode())
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    reply: dict[str, Any] = json.loads(raw.rstrip(b"\x00"))
    return reply


async def test_rest_and_cgminer_reach_the_same_control_surface() -> None:
    async with running_device(allow=["127.0.0.1/32"], performance={"power_w": 3000}) as dev, \
            httpx.AsyncClient(base_url=dev.rest_url, timeout=30) as client:
        assert (await client.post("/api/v1/auth/setup", json={"password": OWNER})).status_code == 201
        token = (await client.post("/api/v1/auth/login", json={"user": "admin", "password": OWNER})).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        control = dev.apis.view.control
        tuner = dev.agent.tuner
        assert tuner is not None

        async def both(rest: tuple[str, str, dict[str, Any] | None], cg: str) -> tuple[Any, Any]:
            """Run the REST form, read the state, reset, run the cgminer form, read the state."""
            method, path, body = rest
            r = await client.request(method, path, json=body, headers=auth)
            assert r.status_code == 200, r.text
            via_rest = (control.get_data().state, control.fraction, str(tuner.base_target))
            await control.resume()
            reply = await cgminer(dev.cgminer_port, cg)
            assert reply["STATUS"][0]["STATUS"] == "S", reply
            via_cgminer = (control.get_data().state, control.fraction, str(tuner.base_target))
            await control.resume()
            return via_rest, via_cgminer

        rest_state, cg_state = await both(("POST", "/api/v1/actions/pause", None), "pause")
        assert rest_state == cg_state and rest_state[0] is RunState.PAUSED
        rest_state, cg_state = await both(("POST", "/api/v1/performance/curtail", {"fraction": 0}),
                                          "ascset|0,curtail,0")
        assert rest_state == cg_state and rest_state[0] is RunState.SLEEPING  # curtail 0 is sleep, everywhere
        rest_state, cg_state = await both(("POST", "/api/v1/performance/curtail", {"fraction": 0.5}),
                                          "ascset|0,curtail,0.5")
        assert rest_state == cg_state and rest_state[0] is RunState.CURTAILED and rest_state[1] == 0.5
        rest_state, cg_state = await both(("PUT", "/api/v1/performance", {"power_w": 2800}), "ascset|0,power,2800")
        assert rest_state == cg_state and rest_state[2] == str(tuner.base_target) and "2,800" in rest_state[2]
        # The status document reports the surface's state.
        await control.pause()
        status = (await client.get("/api/v1/status")).json()
        assert status["control"]["state"] == "paused" and status["device"]["paused"]
        await control.resume()
        # A board clock behind the tuner's back is refused on both edges, with the same reason.
        reply = await cgminer(dev.cgminer_port, "ascset|0,freq,500")
        row = reply["STATUS"][0]
        assert row["Code"] == UNSUPPORTED and "autotuner owns the chip clocks" in row["Msg"]


async def test_unsupported_controls_agree_on_the_cpu_backend() -> None:
    agent = MiningAgent(AgentConfig.from_dict({"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1",
                                                                      "user": "x"}]}]}), CpuHardware())
    view = DeviceView(agent)
    auth = AuthStore(None)
    auth.setup_owner("admin", OWNER)
    headers = {"Authorization": f"Bearer {auth.login('admin', OWNER)}"}
    api = CgminerApi(view, AllowList.parse(["127.0.0.1"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(view, auth)),
                                 base_url="http://localhost") as client:
        for rest, cg in ((("POST", "/api/v1/performance/curtail", {"fraction": 0.5}), "ascset|0,curtail,0.5"),
                         (("PUT", "/api/v1/performance", {"power_w": 3000}), "ascset|0,power,3000"),
                         (("PUT", "/api/v1/cooling", {"mode": "manual", "duty_pct": 50}), None)):
            r = await client.request(rest[0], rest[1], json=rest[2], headers=headers)
            assert r.status_code == 409 and "not supported" in r.json()["detail"], r.text
            if cg is not None:
                reply = await api.respond(cg.encode(), "127.0.0.1")
                assert reply["STATUS"][0]["Code"] == UNSUPPORTED, reply
        # What the CPU can do works through both.
        assert (await client.post("/api/v1/actions/pause", headers=headers)).json()["state"] == "paused"
        assert (await api.respond(b"resume", "127.0.0.1"))["STATUS"][0]["STATUS"] == "S"
        assert view.control.state is RunState.MINING
