"""cgminer API on 4028: real pyasic client, access control, multi-commands, fuzzing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasic.rpc.cgminer import CGMinerRPCAPI

from openmos.api.cgminer import (
    ACCESS_DENIED,
    BUSY,
    INVALID_JSON,
    INVALID_PARAMETER,
    TIMEOUT,
    UNSUPPORTED,
    BadRequest,
    CgminerApi,
    CgminerServer,
    parse_request,
)
from openmos.api.view import DeviceView
from openmos.base.net import AllowList
from openmos.hw.cpu import CpuHardware
from openmos.miner import AgentConfig, MiningAgent
from openmos.miner.config import ConfigError

from api_stack import running_device
from helpers import wait_for


async def raw_request(port: int, payload: bytes, source: str = "127.0.0.1") -> bytes:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def test_pyasic_client_reads_the_agent() -> None:
    async with running_device() as dev:
        await wait_for(lambda: dev.pool.workers.get("api.s21") is not None and
                       dev.pool.workers["api.s21"].accepted >= 1, 60, "a share")
        rpc = CGMinerRPCAPI("127.0.0.1", port=dev.cgminer_port)
        summary = await rpc.summary()
        pools = await rpc.pools()
        stats = await rpc.stats()
        devs = await rpc.devs()
        version = await rpc.version()
        both = await rpc.multicommand("summary", "devs")
        conn = dev.agent.pools.groups[0].connections[0]
        s = summary["SUMMARY"][0]
        assert summary["STATUS"][0]["STATUS"] == "S" and summary["STATUS"][0]["Code"] == 11
        assert s["Hashrate Source"] == "modelled"
        assert s["MHS 1m"] * 1e6 == pytest.approx(dev.agent.hashrate.rate(60), rel=0.1)
        assert 150e6 < s["MHS 1m"] < 260e6  # an S21's worth of modelled hashrate, in MH/s
        assert 2000 < s["Power"] < 4500
        p = pools["POOLS"][0]
        assert (p["URL"], p["User"], p["Stratum Active"]) == (conn.endpoint.url, "api.s21", True)
        assert p["Accepted"] <= conn.counters.accepted and p["Accepted"] >= 1
        assert len(devs["DEVS"]) == 3 and devs["DEVS"][0]["Chips"] == 108
        st_row = stats["STATS"][1]
        assert st_row["fan_num"] == 4 and st_row["total_rateideal"] > 190_000
        assert "OpenMOS" in version["VERSION"][0] and "CGMiner" not in json.dumps(version)
        assert "summary" in both and "devs" in both


async def test_privileged_commands_need_the_allow_list() -> None:
    async with running_device(allow=["W:127.0.0.1/32"]) as dev:
        denied = json.loads((await raw_request(dev.cgminer_port, b'{"command":"addpool","parameter":'
                                               b'"stratum+tcp://127.0.0.1:1,x,x"}', source="127.0.0.2"))[:-1])
        assert denied["STATUS"][0]["STATUS"] == "E" and denied["STATUS"][0]["Code"] == ACCESS_DENIED
        assert len(dev.agent.pools.connections()) == 1
        # Read-only commands still work from there.
        ok = json.loads((await raw_request(dev.cgminer_port, b"summary", source="127.0.0.2"))[:-1])
        assert ok["STATUS"][0]["STATUS"] == "S"
        added = json.loads((await raw_request(dev.cgminer_port, b"addpool|stratum+tcp://127.0.0.1:9,me.b,x"))[:-1])
        assert added["STATUS"][0]["STATUS"] == "S", added
        assert [c.endpoint.user for c in dev.agent.pools.connections()] == ["api.s21", "me.b"]
        bad = json.loads((await raw_request(dev.cgminer_port, b"addpool|ftp://x:1,me,x"))[:-1])
        assert bad["STATUS"][0]["STATUS"] == "E" and "invalid pool" in bad["STATUS"][0]["Msg"]
        removed = json.loads((await raw_request(dev.cgminer_port, b"removepool|1"))[:-1])
        assert removed["STATUS"][0]["STATUS"] == "S"
        last = json.loads((await raw_request(dev.cgminer_port, b"removepool|0"))[:-1])
        assert last["STATUS"][0]["STATUS"] == "E"  # never remove the last pool
        paused = json.loads((await raw_request(dev.cgminer_port, b'{"command":"pause"}'))[:-1])
        assert paused["STATUS"][0]["STATUS"] == "S" and dev.agent.paused
        await raw_request(dev.cgminer_port, b'{"command":"resume"}')
        assert not dev.agent.paused


async def test_default_is_read_only_even_for_localhost() -> None:
    async with running_device() as dev:
        reply = json.loads((await raw_request(dev.cgminer_port, b"pause"))[:-1])
        assert reply["STATUS"][0]["Code"] == ACCESS_DENIED and not dev.agent.paused


async def test_ascset_power_reaches_the_tuner() -> None:
    async with running_device(allow=["127.0.0.1"], performance={"profile": "eco"}) as dev:
        reply = json.loads((await raw_request(dev.cgminer_port, b"ascset|0,power,3000"))[:-1])
        assert reply["STATUS"][0]["STATUS"] == "S", reply
        assert dev.agent.tuner is not None and dev.agent.tuner.base_target.value == 3000
        status = json.loads((await raw_request(dev.cgminer_port, b"tunerstatus"))[:-1])
        assert status["TUNERSTATUS"][0]["Target"] == "3,000 W"


async def test_garbage_gets_an_error_status_and_a_nul() -> None:
    async with running_device() as dev:
        for payload in (b"\xff\xfe{{{", b'{"command": 5}', b"nosuchcommand", b"summary+pause", b"x" * 20000):
            raw = await raw_request(dev.cgminer_port, payload)
            assert raw.endswith(b"\x00")
            reply = json.loads(raw[:-1])
            assert reply["STATUS"][0]["STATUS"] == "E"


def test_wildcard_allow_refused_at_config_load() -> None:
    base = {"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "x"}]}]}
    # Wildcards, wildcards in halves, and anything wider than a /24 (IPv6 /120).
    for bad in (["W:0.0.0.0/0"], ["::/0"], ["not-an-ip"], ["W:0.0.0.0/1", "W:128.0.0.0/1"], ["10.0.0.0/8"],
                ["192.168.1.0/23"], ["fd00::/64"], ["2001:db8::/119"]):
        with pytest.raises(ConfigError, match=r"api\.cgminer_allow"):
            AgentConfig.from_dict({**base, "api": {"cgminer_allow": bad}})


def test_narrow_allow_entries_are_accepted() -> None:
    base = {"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "x"}]}]}
    cfg = AgentConfig.from_dict({**base, "api": {"cgminer_allow": ["W:192.168.1.0/24", "10.0.0.5", "fd00::/120"]}})
    assert len(cfg.api.cgminer_allow) == 3


_idle_agent = MiningAgent(AgentConfig.from_dict(
    {"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "x"}]}]}), CpuHardware())
_api = CgminerApi(DeviceView(_idle_agent))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.text(max_size=100).map(str.encode),
                 st.builds(lambda c, p: json.dumps({"command": c, "parameter": p}).encode(),
                           st.sampled_from(["summary", "pools", "devs", "stats", "version", "check", "addpool",
                                            "ascset", "x+y", "", "summary+devs"]),
                           st.one_of(st.none(), st.text(max_size=30), st.integers())),))
def test_fuzz_always_a_status_reply(payload: bytes) -> None:
    with contextlib.suppress(BadRequest):
        parse_request(payload)
    reply = asyncio.run(_api.respond(payload, "203.0.113.9"))
    json.dumps(reply)
    if "STATUS" in reply:
        assert reply["STATUS"][0]["STATUS"] in ("S", "E")
    else:  # multi-command: one STATUS per part
        parts = [v for k, v in reply.items() if k != "id"]
        assert parts and all(part[0]["STATUS"][0]["STATUS"] in ("S", "E") for part in parts)


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _reply(reader: asyncio.StreamReader) -> dict[str, Any]:
    raw = await asyncio.wait_for(reader.read(), 30)
    assert raw.endswith(b"\x00"), raw[:200]
    reply: dict[str, Any] = json.loads(raw[:-1])
    return reply


@contextlib.asynccontextmanager
async def idle_server(**kwargs: Any) -> AsyncIterator[CgminerServer]:
    server = CgminerServer(CgminerApi(DeviceView(_idle_agent)), "127.0.0.1", 0, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_deeply_nested_json_gets_a_cgminer_error_not_a_recursion_error() -> None:
    nested = b'{"command":' + b"[" * 3000 + b"]" * 3000 + b"}"  # ~6 kB, deeper than json.loads recurses
    async with idle_server() as server:
        for payload in (nested, b"{" * 6000, b'{"command":"summary","parameter":' + b"{" * 5000):
            reader, writer = await _open(server.port)
            writer.write(payload)
            await writer.drain()
            reply = await _reply(reader)
            writer.close()
            assert reply["STATUS"][0]["STATUS"] == "E" and reply["STATUS"][0]["Code"] == INVALID_JSON
            assert "nested" in reply["STATUS"][0]["Msg"]
        # The pure parser refuses the same without recursing.
        with pytest.raises(BadRequest, match="nested"):
            parse_request(nested)
        # Oversize: refused as soon as the limit is passed, with a reply.
        reader, writer = await _open(server.port)
        writer.write(b'{"command":"' + b"a" * 20000)
        reply = await _reply(reader)
        writer.close()
        assert reply["STATUS"][0]["Code"] == INVALID_JSON and "longer" in reply["STATUS"][0]["Msg"]
        reader, writer = await _open(server.port)
        writer.write(b'{"command":"summary"}')
        assert (await _reply(reader))["STATUS"][0]["STATUS"] == "S"  # still serving


async def test_slowloris_is_cut_by_the_connection_deadline() -> None:
    """One byte every 0.2 s never completes a request: the server answers TIMEOUT and closes at its deadline
    (5 s by default) instead of holding the connection for as long as the client likes."""
    async with idle_server() as server:
        reader, writer = await _open(server.port)
        sent = 0
        closed = False
        writer.write(b'{"command":')
        for _ in range(300):  # up to 60 s of dribbling
            try:
                writer.write(b" ")
                await writer.drain()
            except (ConnectionError, OSError):
                closed = True
                break
            sent += 1
            try:
                data = await asyncio.wait_for(reader.read(), 0.2)
            except TimeoutError:
                continue
            closed = True
            assert data.endswith(b"\x00") and json.loads(data[:-1])["STATUS"][0]["Code"] == TIMEOUT
            break
        writer.close()
        assert closed, f"still connected after {sent} bytes"
        assert sent < 150 and server.timed_out == 1


async def test_connections_beyond_the_cap_are_answered_busy() -> None:
    async with idle_server(max_connections=4) as server:
        idle = [await _open(server.port) for _ in range(4)]
        await wait_for(lambda: server.active == 4, 10, "four open connections")
        reader, writer = await _open(server.port)
        writer.write(b"summary")
        reply = await _reply(reader)
        assert reply["STATUS"][0]["Code"] == BUSY and server.refused_busy == 1
        for _, w in idle:
            w.close()
        await wait_for(lambda: server.active == 0, 10, "idle connections closed")
        reader, writer = await _open(server.port)
        writer.write(b"summary")
        assert (await _reply(reader))["STATUS"][0]["STATUS"] == "S"


async def test_one_host_holding_connections_does_not_lock_out_another() -> None:
    """Attack: one address opens 64 idle connections (the cap) and keeps re-opening them. The fleet poller or
    pyasic from another address was answered BUSY for as long as it went on; now one address holds at most
    ``max_per_peer`` and its connections beyond are closed unanswered, not counted against the others."""
    async with idle_server(max_connections=8, max_per_peer=4) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
                for _ in range(12)]
        await wait_for(lambda: server.active == 4 and server.refused_busy == 8, 30, "the host's share held")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.3", 0))
        writer.write(b"summary")
        assert (await _reply(reader))["STATUS"][0]["STATUS"] == "S"
        writer.close()
        for _, w in held:
            w.close()
        await wait_for(lambda: server.active == 0 and not server._per_peer, 30, "connections closed")


UNSUPPORTED_OR_BAD = [
    "ascset|0,freq,500", "ascset|0,power,3000", "ascset|0,hashrate,100", "ascset|0,profile,eco",
    "ascset|0,freq,nan", "ascset|0,freq,1e400", "ascset|0,freq,-5", "ascset|0,power,1e-300", "ascset|9,freq,500",
    "ascset|x,freq,500", "ascset|0,volt,13", "ascset|", "ascset|,,", "switchpool|99", "switchpool|-1",
    "enablepool|1e9", "poolpriority|a,b", "poolpriority|5", "removepool|", "addpool|", "addpool|x,y,z",
    "addpool|stratum+tcp://bad host:1,u,p", "check|", "ledset|", "ledset|0123456789abcdef,red,on",
    "ledset|red,blink", "resetminer|", "resetminer|forged-session",
]


@pytest.mark.parametrize("payload", UNSUPPORTED_OR_BAD)
async def test_every_unsupported_or_bad_control_is_a_clean_cgminer_error(payload: str) -> None:
    """On the CPU backend (no tunable clocks, no tuner): an error STATUS that says why, never an exception
    (which the server would have to answer as "internal error")."""
    api = CgminerApi(DeviceView(_idle_agent), AllowList.parse(["127.0.0.1"]))
    reply = await api.respond(payload.encode(), "127.0.0.1")
    row = reply["STATUS"][0]
    assert row["STATUS"] == "E", reply
    assert "internal" not in row["Msg"].lower()
    if payload in ("ascset|0,freq,500", "ascset|0,power,3000"):
        assert row["Code"] == UNSUPPORTED and ("not supported" in row["Msg"] or "no autotuner" in row["Msg"])


async def test_poolpriority_refuses_duplicates_and_junk_and_orders_within_groups() -> None:
    """`poolpriority|0,0,0` answered "Changed pool priorities" and moved the primary to the third place (each
    repeat moved it again); `0,x,1` silently dropped the x. cgminer refuses a duplicate pool."""
    pools = [{"url": f"stratum+tcp://127.0.0.1:{port}", "user": "x"} for port in (1, 2, 3)]
    agent = MiningAgent(AgentConfig.from_dict({"groups": [{"pools": pools}]}), CpuHardware())
    api = CgminerApi(DeviceView(agent), AllowList.parse(["127.0.0.1"]))

    def order() -> list[str]:
        return [str(c.url) for c in agent.pools.groups[0].connections]

    before = order()
    for payload in ("poolpriority|0,0,0", "poolpriority|1,1", "poolpriority|0,x,1", "poolpriority|0,-1",
                    "poolpriority|" + ",".join(["0"] * 3000)):
        row = (await api.respond(payload.encode(), "127.0.0.1"))["STATUS"][0]
        assert row["STATUS"] == "E" and row["Code"] == INVALID_PARAMETER, (payload, row)
        assert order() == before
    row = (await api.respond(b"poolpriority|2,0", "127.0.0.1"))["STATUS"][0]
    assert row["STATUS"] == "S"
    assert order() == [before[2], before[0], before[1]]  # listed first in that order, the rest after


async def test_pools_and_groups_are_bounded() -> None:
    """addpool (cgminer) and POST /api/v1/pools added pools without end, and a config (PUT /api/v1/config) could
    hold any number of groups, each mining at once with its pool and a hot standby connected."""
    from openmos.miner.config import MAX_GROUPS, MAX_POOLS_PER_GROUP

    agent = MiningAgent(AgentConfig.from_dict({"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1",
                                                                       "user": "x"}]}]}), CpuHardware())
    api = CgminerApi(DeviceView(agent), AllowList.parse(["127.0.0.1"]))
    for i in range(2, MAX_POOLS_PER_GROUP + 1):
        row = (await api.respond(f"addpool|stratum+tcp://127.0.0.1:{i},u".encode(), "127.0.0.1"))["STATUS"][0]
        assert row["STATUS"] == "S", row
    row = (await api.respond(b"addpool|stratum+tcp://127.0.0.1:999,u", "127.0.0.1"))["STATUS"][0]
    assert row["STATUS"] == "E" and row["Code"] == INVALID_PARAMETER and "at most" in row["Msg"]
    assert len(agent.pools.groups[0].connections) == MAX_POOLS_PER_GROUP
    group = {"pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "x"}]}
    with pytest.raises(ConfigError, match="groups: List should have at most"):
        AgentConfig.from_dict({"groups": [group] * (MAX_GROUPS + 1)})
    with pytest.raises(ConfigError, match="pools: List should have at most"):
        AgentConfig.from_dict({"groups": [{"pools": group["pools"] * (MAX_POOLS_PER_GROUP + 1)}]})
