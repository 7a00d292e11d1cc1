"""Stratum V2 end to end on loopback: the agent (simulated S21, real SHA-256d shares) mines over an
encrypted standard channel against ``mos pool``'s V2 front end; shares are counted exactly as on V1; the
refusals (wrong authority key, expired certificate, unlisted Reconnect, tampered bytes) end cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from openmos.bitcoin import BlockHeader, difficulty_to_target, hash_to_int, sha256d
from openmos.hw.interface import MiningHardware
from openmos.hw.sim.backend import SimHardware
from openmos.hw.sim.clock import SimClock
from openmos.miner import MiningAgent
from openmos.pool import LocalPool
from openmos.pool.sv2 import Sv2PoolServer
from openmos.stratum.client import PoolUnavailable
from openmos.stratum.v2.client import Sv2Client
from openmos.stratum.v2.messages import Reconnect
from openmos.stratum.v2.noise import KeyPair, encode_authority_key, issue_server_identity
from openmos.stratum.v2.url import Sv2PoolUrl

from helpers import QUICK_RETRY, cpu_agent, v2_pool, wait_for

SHARE_DIFF = 0.00003  # a share every fraction of a second on one CPU worker


def agent_for(url: str, hardware: MiningHardware | None = None, user: str = "e2e.v2") -> MiningAgent:
    return cpu_agent(url, user=user, hardware=hardware, **QUICK_RETRY)


@pytest.fixture
async def pools() -> AsyncIterator[tuple[LocalPool, Sv2PoolServer]]:
    async with v2_pool(SHARE_DIFF) as both:
        yield both


async def test_sim_s21_mines_over_v2_and_shares_are_counted_like_v1(pools: tuple[LocalPool, Sv2PoolServer]) -> None:
    pool, v2 = pools
    v2_agent = agent_for(v2.url, SimHardware("s21", seed=3, clock=SimClock(1.0)), user="rig.v2")
    v1_agent = agent_for(pool.url, user="rig.v1")
    await v2_agent.start()
    await v1_agent.start()
    try:
        await wait_for(lambda: pool.workers.get("rig.v2") is not None and pool.workers["rig.v2"].accepted >= 5,
                       120, "5 accepted V2 shares")
        await wait_for(lambda: pool.workers.get("rig.v1") is not None and pool.workers["rig.v1"].accepted >= 3,
                       120, "3 accepted V1 shares")
        await asyncio.sleep(0.3)
    finally:
        await v2_agent.stop()
        await v1_agent.stop()
    for agent, worker in ((v2_agent, "rig.v2"), (v1_agent, "rig.v1")):
        conn = agent.pools.groups[0].connections[0]
        stats = pool.workers[worker]
        # Same pool-side accounting function for both protocols; the agent's view matches the pool's.
        assert conn.counters.accepted == stats.accepted
        assert conn.counters.accepted_difficulty == pytest.approx(stats.accepted_difficulty)
        assert agent.stats.hardware_errors == 0 or worker == "rig.v2"  # the simulator models chip errors
    v2_shares = [s for s in pool.accepted if s.worker == "rig.v2"]
    client = v2_agent.pools.groups[0].connections[0]
    assert str(client.url).startswith("stratum2+tcp://")
    for share in v2_shares:  # header-only mining: the pool rebuilt the header from its own coinbase
        header = BlockHeader.parse(share.header)
        assert sha256d(share.header) == share.hash and header.nonce == share.nonce
        assert hash_to_int(share.hash) <= difficulty_to_target(share.target_difficulty)
        assert header.prev_hash == pool.chain.tip
    # Version rolling per the spec: distinct work items differ in version bits, never outside BIP323's.
    versions = {BlockHeader.parse(s.header).version for s in v2_shares}
    assert all((v ^ 0x20000000) & ~0x1FFFFFE0 == 0 for v in versions)


async def test_set_target_drives_difficulty(pools: tuple[LocalPool, Sv2PoolServer]) -> None:
    _pool, v2 = pools
    client = Sv2Client(url_of(v2), "diff.test")
    await client.connect()
    try:
        assert client.difficulty == pytest.approx(SHARE_DIFF, rel=1e-6)
        state = next(iter(v2.connections))
        channel = next(iter(state.channels.values()))
        v2._retarget(state, channel, 0.5)
        await state.conn.writer.drain()
        await wait_for(lambda: client.difficulty == pytest.approx(0.5, rel=1e-6), 10, "SetTarget applied")
        assert difficulty_to_target(client.difficulty) <= client.target
    finally:
        await client.close()


def url_of(v2: Sv2PoolServer) -> Sv2PoolUrl:
    return Sv2PoolUrl.parse(v2.url)


async def test_wrong_authority_key_is_refused_by_the_agent(pools: tuple[LocalPool, Sv2PoolServer]) -> None:
    _pool, v2 = pools
    impostor_key = encode_authority_key(KeyPair.generate().xonly)
    url = f"stratum2+tcp://127.0.0.1:{v2.port}/{impostor_key}"
    agent = agent_for(url)
    await agent.start()
    conn = agent.pools.groups[0].connections[0]
    try:
        await wait_for(lambda: "authority" in conn.last_error, 20, "a certificate refusal")
        assert not conn.alive and conn.counters.accepted == 0
    finally:
        await agent.stop()


async def test_expired_certificate_is_refused(pools: tuple[LocalPool, Sv2PoolServer]) -> None:
    _pool, v2 = pools
    secret = KeyPair.generate()
    v2.static, v2.certificate = issue_server_identity(secret.secret, 10, now=1_000_000)
    url = f"stratum2+tcp://127.0.0.1:{v2.port}/{encode_authority_key(secret.xonly)}"
    client = Sv2Client(Sv2PoolUrl.parse(url), "cert.test")
    with pytest.raises(PoolUnavailable, match="not valid now"):
        await client.connect()


async def test_reconnect_only_to_listed_hosts(pools: tuple[LocalPool, Sv2PoolServer]) -> None:
    _pool, v2 = pools
    client = Sv2Client(url_of(v2), "reconnect.test")
    await client.connect()
    state = next(iter(v2.connections))
    await state.conn.send(Reconnect("evil.example", 3333))
    await state.conn.send(Reconnect("", 0))  # same host and port: allowed
    await asyncio.wait_for(client.closed.wait(), 10)
    assert client.reconnect_target == ("127.0.0.1", v2.port)
    assert "reconnect" in client.close_reason


async def test_mitm_flipping_a_byte_towards_the_agent_ends_the_session(
        pools: tuple[LocalPool, Sv2PoolServer]) -> None:
    _pool, v2 = pools
    flip_at = 234 + 200  # inside the pool's first encrypted frames, after its handshake reply

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", v2.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, tamper: bool) -> None:
            offset = 0
            with contextlib.suppress(ConnectionError):
                while data := await src.read(4096):
                    if tamper and offset <= flip_at < offset + len(data):
                        buf = bytearray(data)
                        buf[flip_at - offset] ^= 0x40
                        data = bytes(buf)
                    offset += len(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_w, False), pipe(up_r, writer, True))

    mitm = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = mitm.sockets[0].getsockname()[1]
    url = v2.url.replace(f":{v2.port}/", f":{port}/")
    client = Sv2Client(Sv2PoolUrl.parse(url), "mitm.test")
    try:
        await client.connect()
        await asyncio.wait_for(client.closed.wait(), 10)
        reason = client.close_reason
    except PoolUnavailable as exc:
        reason = str(exc)
    assert "altered in transit" in reason
    mitm.close()
