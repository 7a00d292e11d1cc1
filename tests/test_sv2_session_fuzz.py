"""Hostile peers: any sequence of well-formed but arbitrary SV2 messages, fed to the pool's V2 session
handler and to the device client's dispatcher, never raises out of the session; state stays bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmos.cli.main import main
from openmos.cli.sv2 import load_authority_secret
from openmos.pool import LocalPool
from openmos.pool.sv2 import Sv2PoolServer, _Connection, generate_authority_key
from openmos.stratum.v2.client import MAX_PENDING_JOBS, Sv2Client
from openmos.stratum.v2.messages import COMMON_AND_MINING, Message, SetupConnection
from openmos.stratum.v2.url import Sv2PoolUrl
from test_sv2_codec import message_strategy

from helpers import easy_pool_settings

ANY_MESSAGE = st.one_of([message_strategy(cls) for cls in COMMON_AND_MINING])


class RecordingConn:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def write(self, msg: Message) -> None:
        self.sent.append(msg)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ANY_MESSAGE, max_size=25))
def test_pool_session_survives_any_message_sequence(messages: list[Message]) -> None:
    pool = LocalPool(easy_pool_settings())
    secret, _ = generate_authority_key()
    server = Sv2PoolServer(pool, secret)
    conn = RecordingConn()
    state = _Connection(conn)  # type: ignore[arg-type]
    server._dispatch(state, SetupConnection(0, 2, 2, 0, "h", 1, "v", "hw", "fw", ""))
    for msg in messages:
        if not server._dispatch(state, msg):
            break
    assert len(state.channels) <= 256


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ANY_MESSAGE, max_size=25))
def test_client_dispatch_survives_any_message_sequence(messages: list[Message]) -> None:
    _, key = generate_authority_key()

    async def run() -> Sv2Client:
        client = Sv2Client(Sv2PoolUrl.parse(f"stratum2+tcp://127.0.0.1:1/{key}"), "fuzz")
        client.channel_id = 1
        for msg in messages:
            if isinstance(msg, Message) and hasattr(msg, "channel_id") and msg.channel_id % 2:
                msg = type(msg)(**{**msg.__dict__, "channel_id": 1})
            await client._dispatch(msg)
        return client

    client = asyncio.run(run())
    assert len(client._future_jobs) <= MAX_PENDING_JOBS
    assert client.difficulty > 0


def test_pool_keygen_cli(tmp_path: Path, capsys: Any) -> None:
    key = tmp_path / "authority.key"
    assert main(["pool", "keygen", "--authority-key", str(key)]) == 0
    out = capsys.readouterr().out
    assert "authority public key" in out and (key.stat().st_mode & 0o077) == 0
    load_authority_secret(key)
    assert main(["pool", "keygen", "--authority-key", str(key)]) == 2  # never overwrites
    key.write_text("not a key")
    with pytest.raises(ValueError, match="not an authority key"):
        load_authority_secret(key)


KEY = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh"  # the sv2-spec 4.7 vector


def test_v2_pool_urls_are_strict_and_normalised() -> None:
    from openmos.miner.config import ConfigError, PoolEndpoint
    from openmos.stratum.v2.url import parse_pool_url

    url = parse_pool_url(f"Stratum2+TCP://Pool.Example:3336/{KEY}")
    assert isinstance(url, Sv2PoolUrl) and url.host == "pool.example" and url.port == 3336
    assert str(url) == f"stratum2+tcp://pool.example:3336/{KEY}"
    assert PoolEndpoint.checked(f"stratum2+tcp://127.0.0.1:3336/{KEY}", "me").url.startswith("stratum2+tcp://")
    for bad in ("stratum2+tcp://127.0.0.1:3336", f"stratum2+tcp://127.0.0.1/{KEY}", f"stratum2+tcp://a:1/{KEY}x",
                f"stratum2+tcp://u@h:1/{KEY}", f"stratum2+tcp://h:1/{KEY}?q", f"stratum2+tcp://h_h:1/{KEY}",
                f"stratum2+tcp://h:1/{KEY} ", "stratum2+tcp://h:1/" + "1" * 600):
        with pytest.raises((ValueError, ConfigError)):
            PoolEndpoint.checked(bad, "me")


def test_setup_connection_refusals_follow_the_spec() -> None:
    from openmos.stratum.v2.messages import (
        REQUIRES_VERSION_ROLLING,
        REQUIRES_WORK_SELECTION,
        SetupConnectionError,
        SetupConnectionSuccess,
    )

    def setup(flags: int, *, protocol: int = 0, versions: tuple[int, int] = (2, 2), mask: int = 0x1FFFE000
              ) -> Message:
        pool = LocalPool(easy_pool_settings(version_mask=mask))
        server = Sv2PoolServer(pool, generate_authority_key()[0])
        conn = RecordingConn()
        ok = server._dispatch(_Connection(conn),  # type: ignore[arg-type]
                              SetupConnection(protocol, *versions, flags, "h", 1, "v", "hw", "fw", ""))
        assert ok == isinstance(conn.sent[0], SetupConnectionSuccess)
        return conn.sent[0]

    assert setup(REQUIRES_VERSION_ROLLING) == SetupConnectionSuccess(2, 0)
    err = setup(REQUIRES_WORK_SELECTION)
    assert isinstance(err, SetupConnectionError) and err.flags == REQUIRES_WORK_SELECTION
    err = setup(REQUIRES_VERSION_ROLLING, mask=0)  # a pool without version rolling lists every flag it lacks
    assert isinstance(err, SetupConnectionError) and err.flags == REQUIRES_WORK_SELECTION | REQUIRES_VERSION_ROLLING
    assert setup(0, mask=0) == SetupConnectionSuccess(2, 1)  # REQUIRES_FIXED_VERSION
    assert isinstance(setup(0, protocol=1), SetupConnectionError)
    assert isinstance(setup(0, versions=(3, 4)), SetupConnectionError)
