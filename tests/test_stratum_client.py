"""The Stratum client against scripted pools: normal flow, bad input, stalls and redirections."""

from __future__ import annotations

import asyncio

import pytest

from openmos.stratum import PoolUrl, StratumJob
from openmos.stratum.client import ClientOptions, PoolUnavailable, StratumClient
from openmos.stratum.job import Share

from fake_pool import FakeConnection, FakePool


async def run_client(script, options: ClientOptions | None = None):  # type: ignore[no-untyped-def]
    pool = FakePool(script)
    await pool.start()
    jobs: list[StratumJob] = []
    closed: list[str] = []
    client = StratumClient(PoolUrl("127.0.0.1", pool.port, False), "me.rig", "x", options,
                           on_job=lambda c, j: jobs.append(j), on_close=lambda c, r: closed.append(r))
    return pool, client, jobs, closed


async def test_handshake_and_notifications() -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.handshake()
        await conn.send({"id": None, "method": "mining.set_version_mask", "params": ["00006000"]})
        await conn.send({"id": None, "method": "mining.set_extranonce", "params": ["ffff0002", 8]})
        await conn.send({"id": 7, "method": "mining.ping", "params": []})
        await conn.send({"id": 8, "method": "client.get_version", "params": []})
        await conn.send({"id": None, "method": "client.show_message", "params": ["maintenance at 5"]})
        while True:
            await conn.recv()

    pool, client, jobs, _ = await run_client(script)
    await client.connect()
    await asyncio.sleep(0.2)
    assert client.version_mask == 0x00006000
    assert client.extranonce1 == bytes.fromhex("ffff0002") and client.extranonce2_size == 8
    assert client.difficulty == 0.5 and client.session_id == "s1"
    assert jobs and jobs[0].job_id == "j1"
    assert list(client.pool_messages) == ["maintenance at 5"]
    conn = pool.connections[0]
    methods = [m.get("method") for m in conn.received]
    assert methods[:3] == ["mining.configure", "mining.subscribe", "mining.authorize"]
    assert "mining.extranonce.subscribe" in methods
    answers = {m["id"]: m.get("result") for m in conn.received if "result" in m}
    assert answers[7] == "pong" and answers[8].startswith("openmos/")
    await client.close()
    await pool.stop()


async def test_garbage_is_ignored_then_connection_dropped_when_persistent() -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.handshake()
        await conn.send(b"{broken\n")
        await conn.send({"id": None, "method": "mining.notify", "params": ["only", "three", "params"]})
        await conn.send({"id": None, "method": "mining.set_difficulty", "params": [-1]})
        await asyncio.sleep(0.2)
        for _ in range(5):
            await conn.send(b"garbage\n")
        await asyncio.sleep(5)

    pool, client, _jobs, closed = await run_client(script)
    await client.connect()
    await asyncio.sleep(0.1)
    assert client.bad_lines == 3 and not client.closed.is_set()  # ignored, still connected
    assert client.difficulty == 0.5
    await asyncio.wait_for(client.closed.wait(), 3)
    assert "bad messages in a row" in closed[0]
    await pool.stop()


async def test_over_long_line_drops_connection() -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.handshake()
        await conn.send(b"[" + b" " * (100 * 1024) + b"]\n")
        await asyncio.sleep(5)

    pool, client, _, closed = await run_client(script)
    await client.connect()
    await asyncio.wait_for(client.closed.wait(), 3)
    assert "length cap" in closed[0]
    await pool.stop()


async def test_unauthorized_worker_fails_connect() -> None:
    async def script(conn: FakeConnection) -> None:
        while True:
            msg = await conn.recv()
            if msg["method"] == "mining.subscribe":
                await conn.send({"id": msg["id"], "result": [[], "00", 4], "error": None})
            elif msg["method"] == "mining.authorize":
                await conn.send({"id": msg["id"], "result": False, "error": [24, "bad worker", None]})
            else:
                await conn.send({"id": msg["id"], "result": None, "error": [20, "no", None]})

    pool, client, _, _ = await run_client(script)
    with pytest.raises(PoolUnavailable, match="not authorised"):
        await client.connect()
    await pool.stop()


async def test_stalled_pool_times_out_handshake() -> None:
    async def script(conn: FakeConnection) -> None:
        await asyncio.sleep(10)

    pool, client, _, _ = await run_client(script, ClientOptions(response_timeout=0.3))
    with pytest.raises(PoolUnavailable, match="no answer"):
        await client.connect()
    await pool.stop()


async def test_submit_timeout_closes_connection() -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.handshake()
        while True:
            await conn.recv()  # never answers submits

    pool, client, _, closed = await run_client(script, ClientOptions(response_timeout=0.3))
    await client.connect()
    share = Share("j1", b"\x00" * 4, 0x5F5E1000, 1, 0x20000000, 0x20000000, 0x1FFFE000)
    with pytest.raises(ConnectionError):
        await client.submit(share)
    assert client.closed.is_set() and "no answer" in closed[0]
    await pool.stop()


async def test_submit_results_counted() -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.handshake()
        answers = [(True, None), (None, [23, "Low difficulty share", None]), (None, [21, "Job not found", None])]
        for result, error in answers:
            msg = await conn.recv()
            while msg.get("method") != "mining.submit":
                msg = await conn.recv()
            await conn.send({"id": msg["id"], "result": result, "error": error})
        await asyncio.sleep(5)

    pool, client, _, _ = await run_client(script)
    await client.connect()
    share = Share("j1", b"\x00" * 4, 0x5F5E1000, 1, 0x20000000, 0x20000000, 0x1FFFE000, 1.0, 0.5)
    results = [await client.submit(share) for _ in range(3)]
    assert [r.accepted for r in results] == [True, False, False]
    assert results[2].stale and not results[1].stale
    c = client.counters
    assert (c.accepted, c.rejected, c.stale, c.accepted_difficulty) == (1, 1, 1, 0.5)
    assert "Low difficulty share (code 23)" in c.reject_reasons
    await client.close()
    await pool.stop()


async def test_reconnect_to_unlisted_host_refused_listed_followed() -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.handshake()
        await conn.send({"id": None, "method": "client.reconnect", "params": ["evil.example", 3333, 0]})
        await asyncio.sleep(0.2)
        await conn.send({"id": None, "method": "client.reconnect", "params": ["127.0.0.2", 4444, 0]})
        await asyncio.sleep(5)

    options = ClientOptions(allowed_reconnect_hosts=frozenset({"127.0.0.2"}))
    pool, client, _, _closed = await run_client(script, options)
    await client.connect()
    await asyncio.sleep(0.1)
    assert not client.closed.is_set() and client.reconnect_target is None
    await asyncio.wait_for(client.closed.wait(), 3)
    assert client.reconnect_target == ("127.0.0.2", 4444)
    await pool.stop()


async def test_reconnect_with_absurd_ports_is_refused_and_the_session_stays() -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.handshake()
        for port in (float("inf"), -1, 0, 70000, "abc", [1], 10**400, True, 80.7, 3333.0, " 80", "0x50"):
            await conn.send({"id": None, "method": "client.reconnect", "params": [None, port]})
            await conn.send({"id": None, "method": "mining.set_difficulty", "params": [2]})  # a good one between
        await asyncio.sleep(5)

    pool, client, _, _closed = await run_client(script)
    await client.connect()
    for _ in range(600):  # generous under load: the script's lines are read in order
        if client.bad_lines >= 12:
            break
        await asyncio.sleep(0.05)
    assert not client.closed.is_set() and client.reconnect_target is None
    assert client.bad_lines == 12
    await client.close()
    await pool.stop()


async def test_connect_refused_is_pool_unavailable() -> None:
    client = StratumClient(PoolUrl("127.0.0.1", 1, False), "me")
    with pytest.raises(PoolUnavailable, match="cannot connect"):
        await client.connect()


def test_reject_reasons_stay_bounded() -> None:
    from openmos.stratum.client import ShareCounters, SubmitResult

    counters = ShareCounters()
    share = Share("j1", b"\x00" * 4, 0, 1, 0x20000000, 0x20000000, 0)
    for i in range(10_000):  # a hostile pool that invents a new reason for every share
        counters.record(SubmitResult(False, f"reason {i}"), share)
    assert len(counters.reject_reasons) <= 33 and counters.rejected == 10_000


@pytest.mark.parametrize("size", [True, 4.0, "4", 0, 17])
def test_extranonce2_size_must_be_an_integer_1_to_16(size: object) -> None:
    """JSON ``true`` was taken as size 1 (bool is an int in Python), in set_extranonce and in the subscribe answer."""
    from openmos.stratum.protocol import Notification, ProtocolError, Response

    async def run() -> None:
        client = StratumClient(PoolUrl("127.0.0.1", 3333, False), "me.rig", options=ClientOptions(version_mask=0))
        with pytest.raises(ProtocolError, match="extranonce2_size"):
            await client._dispatch(Notification("mining.set_extranonce", ["ffff0002", size]))
        assert (client.extranonce1, client.extranonce2_size) == (b"", 4)
        answers = iter([Response(1, [[], "ffff0002", size], None)])

        async def call(method: str, params: list[object], timeout: float | None = None) -> Response:
            return next(answers)

        client.call = call  # type: ignore[method-assign]
        with pytest.raises(ProtocolError, match="extranonce2_size"):
            await client._handshake()

    asyncio.run(run())


@pytest.mark.parametrize("value", ["0011 2233", "00112233\n", " 00112233", "0011\t2233"])
def test_hex_fields_with_whitespace_inside_are_refused(value: str) -> None:
    from openmos.stratum.protocol import ProtocolError, hex_field

    with pytest.raises(ProtocolError, match=r"prevhash is not valid hex \(character \d+ of \d+\)$"):
        hex_field(value, "prevhash")
    assert hex_field("00112233", "prevhash", size=4) == bytes.fromhex("00112233")
