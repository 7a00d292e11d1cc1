"""The Stratum V1 server side shared by the local pool and the farm proxy (openmos.pool.v1_session): one
behaviour for both, tested on each without a network (the requests go straight to the front end)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from openmos.bitcoin import difficulty_to_target, hash_difficulty
from openmos.pool.server import LocalPool, PoolSettings, _Session
from openmos.pool.vardiff import VardiffSettings
from openmos.proxy.server import FarmProxy, ProxySettings, _Downstream
from openmos.stratum import StratumJob
from openmos.stratum.protocol import encode_request, parse_message
from openmos.stratum.v2.noise import KeyPair, encode_authority_key


class Wire:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.lines += [json.loads(line) for line in data.decode().splitlines()]

    def is_closing(self) -> bool:
        return False


def frontends() -> list[tuple[Any, Any]]:
    pool = LocalPool(PoolSettings(port=0, vardiff=None))
    url = f"stratum2+tcp://127.0.0.1:1/{encode_authority_key(KeyPair.generate().xonly)}"
    proxy = FarmProxy(ProxySettings(upstreams=(url,), port=0, vardiff=None))
    return [(pool, _Session), (proxy, _Downstream)]


def ask(frontend: Any, session: Any, method: str, params: list[Any]) -> dict[str, Any]:
    frontend._handle_request(session, parse_message(encode_request(7, method, params)))
    reply: dict[str, Any] = session.writer.lines[-1]
    return reply


@pytest.mark.parametrize("suggested", [float("nan"), float("inf"), -1.0, 0, True, "1", 1e400, 10**400, -(10**400),
                                       None])
def test_hostile_suggested_difficulty_is_refused_by_both(suggested: Any) -> None:
    for frontend, session_type in frontends():
        session = session_type("peer", Wire(), difficulty=0.5)
        reply = ask(frontend, session, "mining.suggest_difficulty", [suggested])
        assert reply["error"] is not None and reply["result"] is None, type(frontend).__name__
        assert session.difficulty == 0.5


def test_configure_unknown_method_and_unauthorised_share_answered_alike() -> None:
    replies = []
    for frontend, session_type in frontends():
        session = session_type("peer", Wire())
        configured = ask(frontend, session, "mining.configure",
                         [["version-rolling", "minimum-difficulty"], {"version-rolling.mask": "ffffffff"}])
        unknown = ask(frontend, session, "mining.steal", [])
        share = ask(frontend, session, "mining.submit", ["nobody", "1", "00000000", "00000000", "00000000"])
        replies.append((configured["result"], unknown["error"], share["error"]))
    assert replies[0] == replies[1]
    configured, unknown, share = replies[0]
    assert configured == {"version-rolling": True, "version-rolling.mask": "1fffe000", "minimum-difficulty": False}
    assert unknown[0] == 20 and "unknown method" in unknown[1]
    assert share[0] == 24  # unauthorized worker


def exchange(frontend: Any, session: Any, method: str, params: list[Any]) -> list[dict[str, Any]]:
    """Every line the miner reads after its request: the answer (id 9) and what follows it."""
    before = len(session.writer.lines)
    frontend._handle_request(session, parse_message(encode_request(9, method, params)))
    lines: list[dict[str, Any]] = session.writer.lines[before:]
    return lines


def late_suggest(frontend: Any, session: Any, value: Any) -> list[dict[str, Any]]:
    """A ``mining.suggest_difficulty`` sent once the worker is authorised (the agent's order)."""
    return exchange(frontend, session, "mining.suggest_difficulty", [value])


def announced(session: Any) -> float:
    """The difficulty the miner was last told (what a miner mines the next job at)."""
    value: float = [m for m in session.writer.lines if m.get("method") == "mining.set_difficulty"][-1]["params"][0]
    return value


def test_late_suggestion_is_announced_by_both_and_hostile_late_values_are_refused() -> None:
    for frontend, session_type in frontends():
        name = type(frontend).__name__
        session = session_type("peer", Wire(), difficulty=0.5, subscribed=True, workers={"rig"})
        for hostile in (float("nan"), 1e400, 10**400, -1.0, 0, None, "2"):
            replies = late_suggest(frontend, session, hostile)
            assert len(replies) == 1 and replies[0]["error"] is not None, (name, hostile, replies)
            assert session.difficulty == 0.5
        assert late_suggest(frontend, session, 0.5) == [{"id": 9, "result": True, "error": None}]  # unchanged
        replies = late_suggest(frontend, session, 2.0)
        # The answer, then the new difficulty for the jobs sent from now on.
        assert replies == [{"id": 9, "result": True, "error": None},
                           {"id": None, "method": "mining.set_difficulty", "params": [2.0]}], name
        assert session.difficulty == 2.0
    proxy = frontends()[1][0]
    downstream = _Downstream("peer", Wire(), difficulty=0.5, subscribed=True, workers={"rig"})
    late_suggest(proxy, downstream, 3.0)
    assert downstream.stats.difficulty == 3.0  # the proxy's per-miner view follows (its difficulty-changed path)


def test_late_suggestion_causes_no_low_difficulty_rejection() -> None:
    """The agent's order: subscribe, authorize, then suggest. A miner mines each job at the difficulty it was
    last told; every share meeting it must be accepted, on the jobs sent before and after the suggestion."""
    start, suggested = 2e-6, 1.6e-5  # a few thousand hashes a share: solved in the test itself
    pool = LocalPool(PoolSettings(port=0, vardiff=None, start_difficulty=start, network_difficulty=1000.0))
    session = _Session("peer", Wire(), difficulty=start)
    pool._sessions.add(session)
    pool.push_job(clean=True)
    subscribed = ask(pool, session, "mining.subscribe", ["test/1.0"])
    en1 = bytes.fromhex(subscribed["result"][1])
    assert exchange(pool, session, "mining.authorize", ["alice.rig", "x"])[0]["result"] is True
    old_job = StratumJob.from_notify(session.writer.lines[-1]["params"])
    assert announced(session) == start
    old_told = announced(session)
    late_suggest(pool, session, suggested)
    pool.push_job(clean=False)
    new_job = StratumJob.from_notify(session.writer.lines[-1]["params"])
    submits = [(old_job, old_told, b"\x00\x00\x00\x01"), (new_job, announced(session), b"\x00\x00\x00\x02")]
    for n, (job, difficulty, en2) in enumerate(submits):
        nonce = barely_meeting(job, en1, en2, difficulty)
        reply = ask(pool, session, "mining.submit", ["alice.rig", job.job_id, en2.hex(), f"{job.ntime:08x}",
                                                    f"{nonce:08x}"])
        assert reply["result"] is True, (n, reply)
    assert pool.workers["alice.rig"].accepted == 2 and not pool.rejections
    assert announced(session) == suggested
    # Credited as the jobs were announced: the old job at the old difficulty, the new one at the new.
    assert pool.workers["alice.rig"].accepted_difficulty == pytest.approx(start + suggested)


def barely_meeting(job: StratumJob, en1: bytes, en2: bytes, difficulty: float) -> int:
    """A nonce whose share meets ``difficulty`` but not twice it: a share any lower requirement would pass
    and a higher one (an unannounced raise) would refuse."""
    header = job.header(en1, en2, ntime=job.ntime, nonce=0, version=job.version)
    for nonce, digest in header.midstate().scan(header.tail12(), range(1 << 32), difficulty_to_target(difficulty)):
        if hash_difficulty(digest) < 2 * difficulty:
            return nonce
    raise AssertionError("no nonce")


def test_more_workers_on_a_connection_get_no_second_difficulty_or_job() -> None:
    """Repeated authorizes on one connection: each answered, but the difficulty and the current job are sent
    once (each extra name cost the pool a set_difficulty and a whole notify: a cheap amplification)."""
    for frontend, session_type in frontends():
        session = session_type("peer", Wire(), difficulty=0.5)
        if isinstance(frontend, LocalPool):
            frontend.push_job(clean=True)
        session.subscribed = True  # (the proxy's subscribe needs an upstream: not under test here)
        for n in range(15):
            ask(frontend, session, "mining.authorize", [f"alice.rig{n}", "x"])
        replies = [line for line in session.writer.lines if line.get("id") == 7]
        assert [r["result"] for r in replies] == [True] * 15, type(frontend).__name__
        methods = [line.get("method") for line in session.writer.lines]
        assert methods.count("mining.set_difficulty") == 1, type(frontend).__name__
        assert methods.count("mining.notify") <= 1
        assert len(session.workers) == 15


def test_late_suggestion_restarts_the_vardiff_window_on_both() -> None:
    """Shares (or none) found at the old difficulty stayed in the vardiff window: 14 s without a share at 0.5,
    a suggestion of 0.01, and the retarget one second later cut it to 0.0025 (4x below what the miner asked
    for, from history at another difficulty). Now the window restarts with the suggestion."""
    vd = VardiffSettings(target_interval=5.0, retarget_after=15.0)
    pool = LocalPool(PoolSettings(port=0, vardiff=vd))
    url = f"stratum2+tcp://127.0.0.1:1/{encode_authority_key(KeyPair.generate().xonly)}"
    proxy = FarmProxy(ProxySettings(upstreams=(url,), port=0, vardiff=vd))
    for frontend, session_type in ((pool, _Session), (proxy, _Downstream)):
        name = type(frontend).__name__
        for shares in (0, 30):  # a miner with no share yet, and one that found many at the old difficulty
            now = time.time()
            session = session_type("peer", Wire(), difficulty=0.5, subscribed=True, workers={"rig"},
                                   window_start=now - 14.0, window_shares=shares)
            late_suggest(frontend, session, 0.01)
            assert session.difficulty == 0.01 and session.window_shares == 0, name
            assert session.window_start >= now, name
            frontend._maybe_retarget(session, now + 1.0)  # the next share, a second later
            assert session.difficulty == 0.01, (name, shares, session.difficulty)
