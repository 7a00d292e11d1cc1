"""Attack tests: what an unauthenticated peer can make the pool's encrypted Stratum V2 ports buffer.

SV2 has no login before ``SetupConnection``: anyone completes the Noise handshake. A frame header claims up to
16 MiB and the server used to read the whole payload before looking at it -- 1 MiB on the pool and template
provider ports, 16 MiB on the job declarator, per connection, with no connection cap: 20 JDS connections took
mos pool from 322 to 642 MB, 100 pool connections added 108 MB. Now a frame larger than the largest message
the peer may send next is refused from its header, SetupConnection must come within ``setup_timeout`` however
many ignored frames arrive, and large frames of all connections share one budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from openmos.base.server import ByteBudget
from openmos.pool import LocalPool
from openmos.pool.jds import JD_REQUEST_MAX_PAYLOAD, JdsServer, JobDeclarator
from openmos.pool.node_rpc import PoolNode, SyntheticMempool
from openmos.pool.sv2 import POOL_MAX_PAYLOAD, Sv2PoolServer, generate_authority_key
from openmos.pool.sv2_listener import SETUP_MAX_PAYLOAD
from openmos.pool.tp import TP_MAX_PAYLOAD, TemplateProvider
from openmos.stratum.v2.framing import encode_header
from openmos.stratum.v2.messages import (
    PROTOCOL_JOB_DECLARATION,
    PROTOCOL_MINING,
    PROTOCOL_TEMPLATE_DISTRIBUTION,
    SetupConnection,
    SetupConnectionSuccess,
)
from openmos.stratum.v2.noise import KeyPair, ciphertext_length
from openmos.stratum.v2.transport import Sv2Connection, open_connection

from helpers import easy_pool_settings, wait_for

SLOW_SETUP_S = 300.0  # the servers' setup timeout here: the old code only closed a stalled frame after it


@dataclass
class Ports:
    pool: LocalPool
    v2: Sv2PoolServer
    jds: JdsServer
    tp: TemplateProvider
    authority: bytes

    def port(self, protocol: int) -> int:
        return {PROTOCOL_MINING: self.v2.port, PROTOCOL_JOB_DECLARATION: self.jds.port,
                PROTOCOL_TEMPLATE_DISTRIBUTION: self.tp.port}[protocol]


@pytest.fixture
async def ports() -> AsyncIterator[Ports]:
    pool = LocalPool(easy_pool_settings())
    await pool.start()
    node = PoolNode(pool.chain, SyntheticMempool(), on_new_tip=pool.new_tip, refill=5)
    decl = JobDeclarator(node, pool.chain.payout_script)
    secret, _ = generate_authority_key()
    v2 = Sv2PoolServer(pool, secret, declarator=decl, setup_timeout=SLOW_SETUP_S)
    jds = JdsServer(decl, secret, setup_timeout=SLOW_SETUP_S)
    tp = TemplateProvider(node, secret, setup_timeout=SLOW_SETUP_S)
    for server in (v2, jds, tp):
        await server.start()
    try:
        yield Ports(pool, v2, jds, tp, KeyPair.from_secret(secret).xonly)
    finally:
        for server in (tp, jds, v2):
            await server.stop()
        await pool.stop()


async def hostile(ports: Ports, protocol: int, *, set_up: bool) -> Sv2Connection:
    conn = await open_connection("127.0.0.1", ports.port(protocol), ports.authority)
    if set_up:
        await conn.send(SetupConnection(protocol, 2, 2, 0, "h", 1, "v", "hw", "fw", ""))
        assert isinstance(await asyncio.wait_for(conn.recv(), 30), SetupConnectionSuccess)
    return conn


def claim(conn: Sv2Connection, length: int, msg_type: int = 0x00) -> None:
    """Write an honest encrypted header announcing ``length`` payload bytes (the payload never follows)."""
    conn.writer.write(conn.session.send.encrypt(b"", encode_header(0, msg_type, length)))


async def closed_by_server(conn: Sv2Connection) -> bool:
    """True when the server hangs up within 60 s (it would wait SLOW_SETUP_S for a payload it accepted)."""
    try:
        await asyncio.wait_for(conn.reader.read(), 60)
        return True
    except TimeoutError:
        return False
    finally:
        await conn.close()


@pytest.mark.parametrize("protocol", [PROTOCOL_MINING, PROTOCOL_JOB_DECLARATION, PROTOCOL_TEMPLATE_DISTRIBUTION])
async def test_a_frame_larger_than_setup_connection_is_refused_from_its_header(ports: Ports, protocol: int) -> None:
    conn = await hostile(ports, protocol, set_up=False)
    claim(conn, SETUP_MAX_PAYLOAD + 1)  # old code: buffered up to 1 MiB (16 MiB on the JDS) per connection
    assert await closed_by_server(conn)
    # A SetupConnection of the largest possible size is still read.
    conn = await open_connection("127.0.0.1", ports.port(protocol), ports.authority)
    text = "x" * 255
    await conn.send(SetupConnection(protocol, 2, 2, 0, text, 1, text, text, text, text))
    assert isinstance(await asyncio.wait_for(conn.recv(), 30), SetupConnectionSuccess)
    await conn.close()


@pytest.mark.parametrize(("protocol", "limit"), [(PROTOCOL_MINING, POOL_MAX_PAYLOAD),
                                                 (PROTOCOL_JOB_DECLARATION, JD_REQUEST_MAX_PAYLOAD),
                                                 (PROTOCOL_TEMPLATE_DISTRIBUTION, TP_MAX_PAYLOAD)])
async def test_after_setup_no_frame_beyond_the_largest_message_the_peer_may_send(ports: Ports, protocol: int,
                                                                                  limit: int) -> None:
    assert limit < 1 << 20 if protocol != PROTOCOL_JOB_DECLARATION else limit < 4 << 20
    conn = await hostile(ports, protocol, set_up=True)
    claim(conn, limit + 1)
    assert await closed_by_server(conn)


async def test_ignored_frames_do_not_extend_the_setup_deadline(ports: Ports) -> None:
    """Frames of an unknown extension are ignored (sv2-spec), but they no longer keep a peer that never sets
    up connected: the old code restarted the setup timeout at every frame."""
    ports.jds.setup_timeout = ports.v2.setup_timeout = 1.0
    conns = [await hostile(ports, p, set_up=False) for p in (PROTOCOL_MINING, PROTOCOL_JOB_DECLARATION)]

    async def dribble(conn: Sv2Connection) -> bool:
        for _ in range(200):  # 60 s of an ignored 0-byte frame every 0.3 s
            if conn.reader.at_eof():
                return True
            conn.writer.write(conn.session.send.encrypt(b"", encode_header(0x4000, 0x01, 0)))  # no payload
            try:
                await asyncio.wait_for(conn.reader.read(1), 0.3)
            except TimeoutError:
                continue
            except ConnectionError:
                return True
        return conn.reader.at_eof()

    assert await asyncio.gather(*(dribble(c) for c in conns)) == [True, True]
    for conn in conns:
        await conn.close()


async def test_large_frames_of_all_connections_share_one_budget(ports: Ports) -> None:
    """Each set-up JDS client may send a ~2.2 MB DeclareMiningJob unasked; many at once used to add up (20 x
    16 MiB: +320 MB). One connection filling the budget makes the next large frame a clean refusal."""
    ports.jds.budget = budget = ByteBudget(3 << 20)
    first = await hostile(ports, PROTOCOL_JOB_DECLARATION, set_up=True)
    # The first connection is allowed its 2 MB frame and sends half of it (the server holds it while reading).
    claim(first, 2 << 20, msg_type=0x57)
    first.writer.write(bytes(ciphertext_length(1 << 20)))
    await wait_for(lambda: budget.in_use > 0, 60, "the first large frame being read")
    second = await hostile(ports, PROTOCOL_JOB_DECLARATION, set_up=True)
    claim(second, 2 << 20, msg_type=0x57)
    assert await closed_by_server(second)
    assert budget.refused == 1
    # Small messages still flow meanwhile, and the budget comes back when the first connection ends.
    third = await hostile(ports, PROTOCOL_JOB_DECLARATION, set_up=True)
    await third.close()
    await first.close()
    await wait_for(lambda: budget.in_use == 0, 60, "the budget to be given back")


async def test_lines_about_connections_are_rate_limited(ports: Ports, caplog: pytest.LogCaptureFixture) -> None:
    """300 failed handshakes on each SV2 port wrote 900 log lines (a peer decided how much the pool logs);
    now 20 of a kind per 10 s per port, then a count of those held back. Every failure is still counted."""
    caplog.set_level(logging.INFO)
    errors_before = ports.jds.protocol_errors

    async def junk(port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(bytes(10))  # a handshake cut short
        await writer.drain()
        writer.close()

    for port in (ports.v2.port, ports.jds.port, ports.tp.port):
        await asyncio.gather(*(junk(port) for _ in range(300)))
    await wait_for(lambda: ports.v2.handshake_failures >= 300 and ports.v2._listener.connections == 0
                   and ports.jds._listener.connections == 0 and ports.tp._listener.connections == 0, 60,
                   "every connection to end")
    for name in ("openmos.pool.sv2", "openmos.pool.jds", "openmos.pool.tp"):
        lines = [r for r in caplog.records if r.name == name]
        assert len(lines) <= 3 * 20, (name, len(lines))
    assert ports.jds.protocol_errors == errors_before  # handshake failures are not protocol errors: unchanged
