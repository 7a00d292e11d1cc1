"""The local pool, driven by a raw Stratum peer: validation, vardiff, resumption, bad input."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from openmos.bitcoin import difficulty_to_target, hash_difficulty
from openmos.pool import LocalPool
from openmos.pool.vardiff import VardiffSettings, next_difficulty
from openmos.stratum import StratumJob

from helpers import easy_pool_settings, wait_for
from stratum_peer import RawPeer

DIFF = 1e-5  # ~43k hashes per share: fast to solve in the test itself


def solve(job: StratumJob, en1: bytes, en2: bytes, difficulty: float, version: int | None = None,
          skip: int = 0) -> int:
    header = job.header(en1, en2, ntime=job.ntime, nonce=0, version=version or job.version)
    target = difficulty_to_target(difficulty)
    found = header.midstate().scan(header.tail12(), range(1 << 32), target)
    for _ in range(skip):
        next(found)
    return next(found)[0]


async def session(pool: LocalPool, *, configure: bool = True) -> tuple[RawPeer, bytes, StratumJob]:
    peer = await RawPeer.connect(pool.port)
    if configure:
        resp = await peer.call(1, "mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}])
        assert resp["result"] == {"version-rolling": True, "version-rolling.mask": "1fffe000"}
    sub = await peer.call(2, "mining.subscribe", ["test/1.0"])
    en1 = bytes.fromhex(sub["result"][1])
    assert sub["result"][2] == 4
    auth = await peer.call(3, "mining.authorize", ["alice.rig", "x"])
    assert auth["result"] is True
    diff = await peer.notification("mining.set_difficulty")
    assert diff["params"] == [DIFF]
    notify = await peer.notification("mining.notify")
    return peer, en1, StratumJob.from_notify(notify["params"])


@pytest.fixture
async def easy_pool() -> LocalPool:
    p = LocalPool(easy_pool_settings(start_difficulty=DIFF))
    await p.start()
    yield p  # type: ignore[misc]
    await p.stop()


async def test_valid_share_accepted_and_verified(easy_pool: LocalPool) -> None:
    peer, en1, job = await session(easy_pool)
    en2 = b"\x00\x00\x00\x07"
    nonce = solve(job, en1, en2, DIFF)
    resp = await peer.call(10, "mining.submit", ["alice.rig", job.job_id, en2.hex(), f"{job.ntime:08x}",
                                                  f"{nonce:08x}"])
    assert resp["result"] is True, resp
    share = easy_pool.accepted[-1]
    assert (share.extranonce1, share.extranonce2, share.nonce) == (en1, en2, nonce)
    assert easy_pool.workers["alice.rig"].accepted == 1
    # duplicate
    dup = await peer.call(11, "mining.submit", ["alice.rig", job.job_id, en2.hex(), f"{job.ntime:08x}",
                                                 f"{nonce:08x}"])
    assert dup["error"][0] == 22
    await peer.close()


async def test_version_rolled_share(easy_pool: LocalPool) -> None:
    peer, en1, job = await session(easy_pool)
    en2 = b"\x00\x00\x00\x01"
    version = job.version | 0x00006000
    nonce = solve(job, en1, en2, DIFF, version)
    resp = await peer.call(10, "mining.submit", ["alice.rig", job.job_id, en2.hex(), f"{job.ntime:08x}",
                                                  f"{nonce:08x}", "00006000"])
    assert resp["result"] is True, resp
    assert easy_pool.accepted[-1].version == version
    bad = await peer.call(11, "mining.submit", ["alice.rig", job.job_id, en2.hex(), f"{job.ntime:08x}",
                                                 f"{nonce:08x}", "e0000000"])
    assert bad["error"][0] == 20 and "outside mask" in bad["error"][1]
    await peer.close()


async def test_bad_shares_rejected_with_reasons(easy_pool: LocalPool) -> None:
    peer, en1, job = await session(easy_pool)
    en2 = "00000002"
    nonce = solve(job, en1, bytes.fromhex(en2), DIFF)
    base = ["alice.rig", job.job_id, en2, f"{job.ntime:08x}", f"{nonce:08x}"]
    cases = [
        (["alice.rig", "nope", *base[2:]], 21, "stale"),
        (["mallory", *base[1:]], 24, "unauthorized"),
        ([*base[:2], "0002", *base[3:]], 20, "extranonce2 must be 4 bytes"),
        ([*base[:3], f"{job.ntime - 1:08x}", base[4]], 20, "ntime out of range"),
        ([*base[:4], f"{(nonce + 1) % (1 << 32):08x}"], 23, "low difficulty"),
        ([*base[:4], "xyz"], 20, "nonce"),
        (base[:3], 20, "at least 5 params"),
    ]
    for i, (params, code, text) in enumerate(cases):
        resp = await peer.call(100 + i, "mining.submit", params)
        assert resp["error"][0] == code, (params, resp)
        assert text in resp["error"][1]
    # The session still works after all that.
    ok = await peer.call(200, "mining.submit", base)
    assert ok["result"] is True
    await peer.close()


async def test_error_replies_never_echo_the_peers_input(easy_pool: LocalPool) -> None:
    """A reply that quotes the request reflects whatever a peer wrote (markup, terminal escapes, a secret pasted
    by mistake) back to it and into logs: every error names the field and the position, never the text."""
    peer = await RawPeer.connect(easy_pool.port)
    marker = "zzMARKER<script>"
    cases = [
        (1, "mining.configure", [["version-rolling"], {"version-rolling.mask": marker}]),
        (2, "mining.configure", [["version-rolling"], {"version-rolling.mask": "ab cd ef"}]),
        (3, "mining." + marker * 50, []),
    ]
    for msg_id, method, params in cases:
        resp = await peer.call(msg_id, method, params)
        assert resp["error"] is not None
        text = json.dumps(resp)
        assert "MARKER" not in text and "ab cd" not in text, resp
    assert "version-rolling.mask is not valid hex (character 1 of 16)" in (await peer.call(
        4, "mining.configure", [["version-rolling"], {"version-rolling.mask": marker}]))["error"][1]
    await peer.send_raw(json.dumps({"id": 5, "method": marker, "params": marker}).encode() + b"\n")
    resp = await peer.response(None)  # a message that does not parse is answered with id null
    assert "must be a JSON array" in resp["error"][1] and "MARKER" not in json.dumps(resp)
    await peer.close()


async def test_garbage_and_unknown_methods_do_not_kill_the_pool(easy_pool: LocalPool) -> None:
    peer, _en1, _job = await session(easy_pool)
    await peer.send_raw(b"this is not json\n")
    err = await peer.response(None)
    assert "malformed JSON" in err["error"][1]
    resp = await peer.call(5, "mining.frobnicate", [])
    assert "unknown method" in resp["error"][1]
    resp = await peer.call(6, "mining.suggest_difficulty", ["high"])
    assert resp["error"] is not None
    # An over-long line gets this connection dropped...
    await peer.send_raw(b"x" * (200 * 1024) + b"\n")
    with pytest.raises((ConnectionError, json.JSONDecodeError, asyncio.IncompleteReadError)):
        while True:
            await peer.next_message()
    # ...while the pool keeps serving everyone else.
    other, _, _ = await session(easy_pool)
    await other.close()
    assert easy_pool.protocol_errors >= 2


async def test_subscribe_then_authorize_order_enforced(easy_pool: LocalPool) -> None:
    peer = await RawPeer.connect(easy_pool.port)
    resp = await peer.call(1, "mining.authorize", ["bob", "x"])
    assert resp["error"][0] == 25
    await peer.close()


async def test_password_checked_when_configured() -> None:
    pool = LocalPool(easy_pool_settings(password="s3cret"))
    await pool.start()
    try:
        peer = await RawPeer.connect(pool.port)
        await peer.call(1, "mining.subscribe", [])
        assert (await peer.call(2, "mining.authorize", ["bob", "wrong"]))["error"][0] == 24
        assert (await peer.call(3, "mining.authorize", ["bob", "s3cret"]))["result"] is True
        await peer.close()
    finally:
        await pool.stop()


async def subscribed(pool: LocalPool, token: str | None = None) -> tuple[RawPeer, bytes, str, StratumJob]:
    """A session that subscribes (offering ``token`` to resume) and authorises: (peer, en1, its token, job)."""
    peer = await RawPeer.connect(pool.port)
    sub = await peer.call(1, "mining.subscribe", ["test/1.0", *([token] if token else [])])
    assert (await peer.call(2, "mining.authorize", ["alice.rig", "x"]))["result"] is True
    notify = await peer.notification("mining.notify")
    return peer, bytes.fromhex(sub["result"][1]), sub["result"][0][1][1], StratumJob.from_notify(notify["params"])


async def test_session_resumption_returns_same_extranonce1(easy_pool: LocalPool) -> None:
    peer, en1, token, _ = await subscribed(easy_pool)
    assert token != en1.hex() and len(token) >= 16, "the session id is a token, not the guessable extranonce1"
    await peer.close()
    await wait_for(lambda: token in easy_pool._resumable, 10, "the pool noticed the disconnect")
    again, en1_again, token_again, _ = await subscribed(easy_pool, token)
    assert (en1_again, token_again) == (en1, token) and easy_pool.resumed_sessions == 1
    other, en1_other, _, _ = await subscribed(easy_pool, en1.hex())  # the extranonce1 is not the key
    assert en1_other != en1
    stranger, en1_stranger, _, _ = await subscribed(easy_pool, "f" * 16)
    assert en1_stranger not in (en1, en1_other)
    for p in (again, other, stranger):
        await p.close()


async def test_resume_before_the_pool_saw_the_drop_takes_the_session_over(easy_pool: LocalPool) -> None:
    """A reconnect can beat the old connection's end to the pool: the token holder gets its session back."""
    old, en1, token, _ = await subscribed(easy_pool)
    new, en1_new, _, _ = await subscribed(easy_pool, token)  # the old connection is still open here
    assert en1_new == en1
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError, OSError)):
        await old.next_message(10)  # the pool closed the replaced connection
    await wait_for(lambda: len(easy_pool._sessions) == 1, 10, "the old connection gone")
    third, en1_third, _, _ = await subscribed(easy_pool)  # the session stays in use: nobody else gets it
    assert en1_third != en1 and en1 in easy_pool._active_en1
    await new.close()
    await third.close()


async def test_resume_window_expires() -> None:
    now = [1000.0]
    pool = LocalPool(easy_pool_settings(start_difficulty=DIFF, resume_window=60.0), clock=lambda: now[0])
    await pool.start()
    try:
        peer, en1, token, _ = await subscribed(pool)
        await peer.close()
        await wait_for(lambda: token in pool._resumable, 10, "the pool noticed the disconnect")
        now[0] += 61.0
        late, en1_late, _, _ = await subscribed(pool, token)
        assert en1_late != en1 and pool.resumed_sessions == 0
        await late.close()
    finally:
        await pool.stop()


async def test_share_resent_on_a_resumed_session_is_acknowledged_once(easy_pool: LocalPool) -> None:
    """The answer to a share was lost with the connection: re-sent on the resumed session it is answered
    true again but credited once; sent twice on one connection it is still a duplicate."""
    peer, en1, token, job = await subscribed(easy_pool)
    nonce = solve(job, en1, b"\x00\x00\x00\x05", DIFF)
    submit = ["alice.rig", job.job_id, "00000005", f"{job.ntime:08x}", f"{nonce:08x}"]
    assert (await peer.call(10, "mining.submit", submit))["result"] is True
    await peer.close()
    await wait_for(lambda: token in easy_pool._resumable, 10, "the pool noticed the disconnect")
    again, _, _, _ = await subscribed(easy_pool, token)
    assert (await again.call(11, "mining.submit", submit))["result"] is True
    assert (await again.call(12, "mining.submit", submit))["error"][0] == 22
    assert easy_pool.workers["alice.rig"].accepted == 1 and easy_pool.replayed_shares == 1
    other, _, _, _ = await subscribed(easy_pool)  # another session cannot replay it (its extranonce1 differs)
    assert (await other.call(13, "mining.submit", submit))["result"] is not True
    await again.close()
    await other.close()


async def test_block_found_advances_chain_and_sends_clean_job() -> None:
    pool = LocalPool(easy_pool_settings(start_difficulty=DIFF, network_difficulty=DIFF))
    await pool.start()
    try:
        peer, en1, job = await session(pool)
        height = pool.chain.height
        nonce = solve(job, en1, b"\x00\x00\x00\x09", DIFF)
        resp = await peer.call(10, "mining.submit", ["alice.rig", job.job_id, "00000009", f"{job.ntime:08x}",
                                                      f"{nonce:08x}"])
        assert resp["result"] is True
        assert pool.chain.height == height + 1 and len(pool.blocks_found) == 1
        notify = await peer.notification("mining.notify")
        new_job = StratumJob.from_notify(notify["params"])
        assert new_job.clean_jobs and new_job.prev_hash == pool.blocks_found[0].hash
        # The old job is gone: stale.
        stale = await peer.call(11, "mining.submit", ["alice.rig", job.job_id, "0000000a",
                                                       f"{job.ntime:08x}", f"{nonce:08x}"])
        assert stale["error"][0] == 21
        await peer.close()
    finally:
        await pool.stop()


def test_vardiff_rules() -> None:
    vd = VardiffSettings(target_interval=5, retarget_after=10, max_step=4)
    assert next_difficulty(1.0, 10, 5.0, vd) is None  # not enough history
    assert next_difficulty(1.0, 100, 20.0, vd) == 4.0  # way too many shares: capped step up
    assert next_difficulty(1.0, 0, 60.0, vd) == 0.25  # none at all: step down
    assert next_difficulty(1.0, 4, 20.0, vd) is None  # on target (one per 5 s)
    two = next_difficulty(1.0, 8, 20.0, vd)
    assert two is not None and abs(two - 2.0) < 1e-9
    assert next_difficulty(1e-6, 0, 60.0, VardiffSettings(min_difficulty=1e-6)) is None


async def test_vardiff_raises_difficulty_for_a_fast_miner() -> None:
    vd = VardiffSettings(target_interval=5, retarget_after=0.2, max_step=4)
    pool = LocalPool(easy_pool_settings(start_difficulty=DIFF, vardiff=vd))
    await pool.start()
    try:
        peer, en1, job = await session(pool)
        for i in range(3):
            en2 = (i + 1).to_bytes(4, "big")
            nonce = solve(job, en1, en2, DIFF)
            await peer.call(10 + i, "mining.submit", ["alice.rig", job.job_id, en2.hex(), f"{job.ntime:08x}",
                                                      f"{nonce:08x}"])
            await asyncio.sleep(0.1)
        msg = await peer.notification("mining.set_difficulty")
        assert msg["params"][0] > DIFF
        await peer.close()
    finally:
        await pool.stop()


async def test_hostile_resume_tokens_get_a_fresh_session(easy_pool: LocalPool) -> None:
    peer, en1, token, _ = await subscribed(easy_pool)
    for i, bad in enumerate([{"a": 1}, ["x"], 12345, None, "z" * 1000, token + "0", token.upper(), ""]):
        other = await RawPeer.connect(easy_pool.port)
        sub = await other.call(1, "mining.subscribe", ["test/1.0", bad])
        assert "result" in sub and sub["result"][1] != en1.hex(), f"case {i}"
        await other.close()
    assert easy_pool.resumed_sessions == 0
    assert len(easy_pool._resumable) <= 10_000
    await peer.close()


async def test_worker_names_are_bounded_and_shown_literally(easy_pool: LocalPool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Observed: one connection authorised 100,000 names (RSS 75 -> 184 MB, all kept and redrawn twice a second
    in the live panel), and a worker named ``[/]`` stopped that panel with a rich MarkupError."""
    from rich.console import Console

    from openmos.cli.display import MAX_ROWS, pool_panel
    from openmos.pool.v1_session import MAX_WORKERS_PER_CONNECTION

    peer = await RawPeer.connect(easy_pool.port)
    await peer.call(1, "mining.subscribe", ["test/1.0"])
    assert (await peer.call(2, "mining.authorize", ["[/]", "x"]))["result"] is True
    assert (await peer.call(3, "mining.authorize", ["[bold red]x[link=http://evil.example]y", "x"]))["result"]
    for i, name in enumerate(["\x1b[2J\x1b[31mEVIL", "a\nb", "del\x7f"]):
        reply = await peer.call(10 + i, "mining.authorize", [name, "x"])
        assert reply["error"][0] == 24 and "control characters" in reply["error"][1]
    for i in range(MAX_WORKERS_PER_CONNECTION - 2):
        assert (await peer.call(100 + i, "mining.authorize", [f"w{i}", "x"]))["result"] is True
    reply = await peer.call(999, "mining.authorize", ["one.too.many", "x"])
    assert reply["error"][0] == 24 and "per connection" in reply["error"][1]
    assert (await peer.call(1000, "mining.authorize", ["w0", "x"]))["result"] is True  # a known name still works
    assert len(easy_pool.workers) == MAX_WORKERS_PER_CONNECTION

    console = Console(record=True, width=160, color_system=None)
    console.print(pool_panel(easy_pool))
    shown = console.export_text()
    assert "[/]" in shown and "[bold red]x[link=http://evil.example]y"[:20] in shown
    assert f"{MAX_WORKERS_PER_CONNECTION - MAX_ROWS} more workers" in shown
    assert sum(f"w{i} " in shown for i in range(MAX_WORKERS_PER_CONNECTION)) <= MAX_ROWS

    # The pool as a whole keeps statistics for at most MAX_WORKERS names.
    monkeypatch.setattr("openmos.pool.server.MAX_WORKERS", len(easy_pool.workers))
    other = await RawPeer.connect(easy_pool.port)
    await other.call(1, "mining.subscribe", ["test/1.0"])
    reply = await other.call(2, "mining.authorize", ["newcomer", "x"])
    assert reply["error"][0] == 24 and "no room" in reply["error"][1]
    assert (await other.call(3, "mining.authorize", ["w1", "x"]))["result"] is True
    await other.close()
    await peer.close()


async def test_sockets_that_never_authorise_are_let_go_and_connections_are_capped(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Observed: 19,900 idle connections were all held (RSS 74 -> 247 MB, 19,909 file descriptors) for the
    900 s idle timeout; with the usual 1,024-descriptor limit that is the pool's whole capacity."""
    monkeypatch.setattr("openmos.pool.v1_session.AUTHORIZE_WITHIN_S", 1.0)
    pool = LocalPool(easy_pool_settings(start_difficulty=DIFF, max_connections=3))
    await pool.start()
    try:
        idle = await RawPeer.connect(pool.port)
        await idle.call(1, "mining.subscribe", ["test/1.0"])  # subscribes, never authorises
        miner, _, _ = await session(pool)
        third = await RawPeer.connect(pool.port)
        await wait_for(lambda: pool._listener.connections == 3, 10, "three connections")
        with caplog.at_level(logging.WARNING, logger="openmos.base.server"):
            refused = await RawPeer.connect(pool.port)
            assert await refused.reader.read() == b""  # closed at once: the pool is full
            await wait_for(lambda: pool._listener.refused == 1, 10, "the refusal counted")
        assert any("refused" in r.getMessage() and "limit" in r.getMessage() for r in caplog.records)
        assert await asyncio.wait_for(idle.reader.read(), 30) == b""  # not authorised within the (1 s) limit
        assert await asyncio.wait_for(third.reader.read(), 30) == b""
        await wait_for(lambda: pool._listener.connections == 1, 10, "idle sockets closed")
        assert (await miner.call(5, "mining.authorize", ["alice.rig", "x"]))["result"] is True  # still served
        again, _, _ = await session(pool)  # room again
        await again.close()
        await miner.close()
    finally:
        await pool.stop()


async def test_connection_churn_does_not_flood_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """19,900 connections wrote 39,807 lines ("miner connected from" / "disconnected"): a peer opening and
    closing sockets controlled how much the pool logged. Per kind, 20 lines per 10 s, then a count."""
    from openmos.pool.v1_session import PEER_LOG_BURST

    pool = LocalPool(easy_pool_settings(start_difficulty=DIFF))
    pool.peer_log.clock = lambda: 1000.0  # one window for the whole test, however slow the machine
    await pool.start()
    try:
        with caplog.at_level(logging.INFO, logger="openmos.pool"):
            for _ in range(3 * PEER_LOG_BURST):
                peer = await RawPeer.connect(pool.port)
                await peer.send_raw(b"not json\n")
                await peer.next_message()  # the error reply: the line was read and logged
                await peer.close()
            await wait_for(lambda: pool._listener.connections == 0, 30, "every connection closed")
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("openmos.pool")]
        for kind in ("connected from", "disconnected", "bad message"):
            assert sum(kind in line for line in lines) == PEER_LOG_BURST, kind
        assert pool.protocol_errors == 3 * PEER_LOG_BURST  # counted, all of them
        pool.peer_log.clock = lambda: 2000.0
        with caplog.at_level(logging.INFO, logger="openmos.pool"):
            peer = await RawPeer.connect(pool.port)
            await wait_for(lambda: any("similar lines suppressed" in r.getMessage() for r in caplog.records), 30,
                           "the next window says how many lines were held back")
            await peer.close()
    finally:
        await pool.stop()


async def test_refused_shares_are_counted_by_reason_not_by_message(easy_pool: LocalPool) -> None:
    """Every low-difficulty share added its own entry ("low difficulty share (0.00031 < 0.001)") to the pool's
    rejection counts: random nonces grew it without bound. The miner still gets the details."""
    peer, en1, job = await session(easy_pool)
    en2 = b"\x00\x00\x00\x09"
    replies = []
    for i in range(200):
        nonce = (i * 2654435761) & 0xFFFFFFFF
        header = job.header(en1, en2, ntime=job.ntime, nonce=nonce, version=job.version)
        if hash_difficulty(header.hash()) >= DIFF:
            continue  # a real share by chance: not what this test sends
        replies.append(await peer.call(100 + i, "mining.submit", ["alice.rig", job.job_id, en2.hex(),
                                                                  f"{job.ntime:08x}", f"{nonce:08x}"]))
    assert len(replies) > 150 and all(r["error"][0] == 23 and "<" in r["error"][1] for r in replies)
    assert easy_pool.rejections == {"low difficulty share": len(replies)}
    await peer.close()
