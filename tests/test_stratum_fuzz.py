"""Hypothesis fuzzing of every Stratum V1 field the agent parses: zero crashes, bounded state.

Each pool message goes through the same path as on the wire (``parse_message`` then the client's
dispatcher); handshake answers go through the real handshake with a scripted ``call``; every job that
parses is also turned into a header the way the agent does. The only acceptable failure is a
``ProtocolError`` (logged and counted by the client). ``FUZZ_EXAMPLES`` sets the total number of cases
(CI: 10,000; ``make fuzz``: 100,000).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmos.bitcoin import difficulty_to_target
from openmos.stratum import PoolUrl
from openmos.stratum.client import MAX_POOL_MESSAGES, ClientOptions, PoolUnavailable, StratumClient
from openmos.stratum.difficulty import DifficultyRange
from openmos.stratum.job import StratumJob
from openmos.stratum.protocol import ProtocolError, Response, parse_message

TESTS = 6
EXAMPLES = max(1, int(os.environ.get("FUZZ_EXAMPLES", "10000")) // TESTS + 1)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

hexes = st.text(alphabet="0123456789abcdefABCDEF", max_size=80)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), hexes)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)


def word_hex(size: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=size, max_size=size).map(bytes.hex)


# A notify field is either plausible (right type and size) or anything at all.
notify_params = st.tuples(
    st.one_of(st.text(min_size=1, max_size=20), json_values),
    st.one_of(word_hex(32), hexes, json_values),
    st.one_of(st.binary(max_size=120).map(bytes.hex), json_values),
    st.one_of(st.binary(max_size=120).map(bytes.hex), json_values),
    st.one_of(st.lists(word_hex(32), max_size=14), st.lists(json_values, max_size=3), json_values),
    st.one_of(word_hex(4), json_values),
    st.one_of(word_hex(4), json_values),
    st.one_of(word_hex(4), st.just("ffffffff"), json_values),
    st.one_of(st.booleans(), json_values),
).map(list) | st.lists(json_values, max_size=12)

# The JSON text of the value, so literals json.dumps would never write (1e400) go out as a pool sends them.
difficulties = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(json.dumps),
    st.integers(min_value=-(2**70), max_value=2**1100).map(str),
    st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "1e-300", "0", "-0.0", "1e300", "5e-324", "true",
                     '"1"', "[1]", "{}", "1e18", "1.0000001e18", "2.3283064365386963e-10"]),
    json_values.map(json.dumps))


class FakeWriter:
    """Stands in for the socket: remembers how much the client wrote, never blocks."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    async def drain(self) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    logging.getLogger("openmos.stratum").setLevel(logging.CRITICAL)  # millions of refusals are expected here
    yield loop
    logging.getLogger("openmos.stratum").setLevel(logging.NOTSET)
    loop.close()


@pytest.fixture(scope="module")
def client(loop: asyncio.AbstractEventLoop) -> StratumClient:
    jobs: list[StratumJob] = []

    async def make() -> StratumClient:
        c = StratumClient(PoolUrl("127.0.0.1", 3333, False), "me.rig",
                          options=ClientOptions(difficulty_range=DifficultyRange.for_hashrate(1e6)),
                          on_job=lambda _c, job: jobs.append(job))
        c._writer = FakeWriter()  # type: ignore[assignment]
        return c

    return loop.run_until_complete(make())


def deliver(loop: asyncio.AbstractEventLoop, client: StratumClient, line: bytes) -> None:
    """One line through the wire path; only ProtocolError may come out."""
    try:
        msg = parse_message(line)
    except ProtocolError:
        return
    try:
        loop.run_until_complete(client._dispatch(msg))
    except ProtocolError:
        client.bad_lines += 1


def line_of(method: str, params: Any, msg_id: Any = None) -> bytes:
    return json.dumps({"id": msg_id, "method": method, "params": params}).encode() + b"\n"


def check_bounded(client: StratumClient) -> None:
    assert len(client.pool_messages) <= MAX_POOL_MESSAGES
    assert not client._pending
    assert math.isfinite(client.difficulty) and client.difficulty > 0
    difficulty_to_target(client.difficulty)  # always usable by the agent
    assert 1 <= client.extranonce2_size <= 16 and len(client.extranonce1) <= 32


@FUZZ
@given(params=notify_params, en2=st.binary(min_size=1, max_size=16))
def test_fuzz_notify(loop: asyncio.AbstractEventLoop, client: StratumClient, params: list[Any], en2: bytes) -> None:
    before = client.last_job
    deliver(loop, client, line_of("mining.notify", params))
    job = client.last_job
    if job is not None and job is not before:
        # What the agent does with every job: roll ntime, build the header, hash it.
        header = job.header(client.extranonce1, en2, ntime=min(job.ntime + 7200, 0xFFFFFFFF), nonce=0,
                            version=job.version)
        assert len(header.serialize()) == 80
        header.hash()
    check_bounded(client)


@FUZZ
@given(raw=difficulties)
def test_fuzz_set_difficulty(loop: asyncio.AbstractEventLoop, client: StratumClient, raw: str) -> None:
    deliver(loop, client, f'{{"id":null,"method":"mining.set_difficulty","params":[{raw}]}}\n'.encode())
    check_bounded(client)


@FUZZ
@given(method=st.sampled_from(["mining.set_extranonce", "mining.set_version_mask", "client.reconnect",
                               "client.show_message", "client.get_version", "mining.ping", "x.unknown",
                               "mining.set_difficulty", "mining.notify"]),
       params=st.one_of(st.lists(json_values, max_size=4), json_values), msg_id=st.one_of(st.none(), json_values))
def test_fuzz_other_methods(loop: asyncio.AbstractEventLoop, client: StratumClient, method: str, params: Any,
                            msg_id: Any) -> None:
    deliver(loop, client, json.dumps({"id": msg_id, "method": method, "params": params}).encode() + b"\n")
    if client.closed.is_set():  # a client.reconnect to the same host closes this session: start a fresh one
        client.closed.clear()
        client.reconnect_target = None
    check_bounded(client)


@FUZZ
@given(result=json_values, error=json_values, msg_id=st.one_of(st.integers(), st.text(max_size=5), json_values))
def test_fuzz_responses(loop: asyncio.AbstractEventLoop, client: StratumClient, result: Any, error: Any,
                        msg_id: Any) -> None:
    line = json.dumps({"id": msg_id, "result": result, "error": error}).encode() + b"\n"
    deliver(loop, client, line)
    try:
        msg = parse_message(line)
    except ProtocolError:
        return
    assert isinstance(msg, Response)
    assert isinstance(msg.error_text(), str) and (msg.error_code() is None or isinstance(msg.error_code(), int))


@FUZZ
@given(configure=json_values, subscribe=st.one_of(
    st.tuples(json_values, st.one_of(hexes, json_values), st.one_of(st.integers(-5, 40), json_values)).map(list),
    json_values), authorize=json_values, errors=st.lists(st.one_of(st.none(), json_values), min_size=3, max_size=3))
def test_fuzz_handshake_answers(loop: asyncio.AbstractEventLoop, configure: Any, subscribe: Any, authorize: Any,
                                errors: list[Any]) -> None:
    answers = iter([Response(1, configure, errors[0]), Response(2, subscribe, errors[1]),
                    Response(3, authorize, errors[2])])

    async def run() -> None:
        c = StratumClient(PoolUrl("127.0.0.1", 3333, False), "me.rig")
        c._writer = FakeWriter()  # type: ignore[assignment]

        async def call(method: str, params: list[Any], timeout: float | None = None) -> Response:
            return next(answers)

        c.call = call  # type: ignore[method-assign]
        try:
            await c._handshake()
        except (ProtocolError, PoolUnavailable):
            return
        assert c.authorized and 1 <= c.extranonce2_size <= 16 and len(c.extranonce1) <= 32
        assert c.version_mask & ~c.options.version_mask == 0

    loop.run_until_complete(run())


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                      st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)))
def test_fuzz_raw_lines(loop: asyncio.AbstractEventLoop, client: StratumClient, data: bytes) -> None:
    deliver(loop, client, data + b"\n")
    check_bounded(client)
