"""The Stratum V1 server side shared by the local pool and the farm proxy (openmos.pool.v1_session): one
behaviour for both, tested on each without a network (the requests go straight to the front end)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openmos.pool.server import LocalPool, PoolSettings, _Session
from openmos.proxy.server import FarmProxy, ProxySettings, _Downstream
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
