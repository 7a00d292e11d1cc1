"""Hypothesis fuzzing of every Stratum V1 field the agent parses: zero crashes, bounded state.

Each pool message goes through the same path as on the wire (``parse_message`` then the client's
dispatcher); handshake answers go through the real handshake with a scripted ``call``; every job that
parses is also turned into a header the way the agent does. The only acceptable failure is a
``ProtocolError`` (logged and counted by the client). ``FUZZ_EXAMPLES`` sets the total number of cases
(CI: 10,000; ``make fuzz``: 100,000).

Most cases are well-formed messages with hostile values, so they reach the paths behind the parser: a notify's
header is compared with one built by hashlib from the raw fields, its nonce re-checked by the agent's
validator, its share's submit fields read back; set_difficulty / set_extranonce / set_version_mask /
client.reconnect values are checked against an oracle (used exactly as sent, or refused, counted, state kept).
One-bad-field messages must be refused; the rest is garbage. The ``reached`` fixture fails the module if the
share of cases reaching those paths collapses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmos.bitcoin import difficulty_to_target
from openmos.bitcoin.version import apply_version_bits
from openmos.hw.work import WorkItem
from openmos.miner.validation import InvalidNonce, WorkValidator
from openmos.stratum import PoolUrl
from openmos.stratum.client import MAX_POOL_MESSAGES, ClientOptions, PoolUnavailable, StratumClient
from openmos.stratum.difficulty import DifficultyRange
from openmos.stratum.job import MAX_BRANCH, Share, StratumJob
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


# Garbage: each notify field is either plausible (right type and size) or anything at all (rarely parses).
garbage_notify = st.tuples(
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

U32_EDGES = [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x20000000, 0x1FFFE000, 0x1D00FFFF, 0x207FFFFF, 0x03000000]
u32s = st.one_of(st.integers(0, 0xFFFFFFFF), st.sampled_from(U32_EDGES))
not_strings = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                        st.lists(st.integers(0, 255), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                    max_size=2))


def any_case(raw: bytes, upper: bool) -> str:
    return raw.hex().upper() if upper else raw.hex()


def hex_bytes(raw: st.SearchStrategy[bytes]) -> st.SearchStrategy[str]:
    """Valid hex of these bytes, in either case (pools differ)."""
    return st.builds(any_case, raw, st.booleans())


def bad_hex(size: int | None) -> st.SearchStrategy[Any]:
    """A value that must be refused where hex (of exactly ``size`` bytes, if given) is expected."""
    odd = st.tuples(st.binary(max_size=40), st.sampled_from("0123456789abcdefABCDEF")).map(lambda t: t[0].hex() + t[1])
    non_hex = st.tuples(st.binary(min_size=size or 1, max_size=size or 40), st.sampled_from("gxzGX-+.:é\u0000"),
                        st.integers(0, 80)).map(lambda t: t[0].hex()[:t[2]] + t[1] + t[0].hex()[t[2]:])
    choices = [odd, non_hex, not_strings, st.builds(lambda v: f"0x{v:08x}", u32s)]
    if size is not None:
        choices.append(hex_bytes(st.binary(max_size=2 * size + 8).filter(lambda b: len(b) != size)))
    return st.one_of(*choices)


# Well formed: every field of the right type and size, with hostile values (any job id up to the cap, coinbase
# parts from empty to kilobytes, merkle branches up to the cap, u32 edges, extra trailing params).
coinbase_parts = st.one_of(hex_bytes(st.binary(max_size=120)),  # kilobytes, cheaply: a pattern repeated
                           hex_bytes(st.builds(bytes.__mul__, st.binary(min_size=1, max_size=16),
                                               st.integers(60, 200))))
hash32 = st.one_of(st.binary(min_size=32, max_size=32), st.sampled_from([bytes(32), b"\xff" * 32]))


def branch_of(size: int, seed: bytes, upper: bool) -> list[str]:
    """``size`` distinct merkle entries, derived from a seed (drawing 32 hashes one by one is slow)."""
    return [any_case(hashlib.sha256(seed + bytes([i])).digest(), upper) for i in range(size)]


branches = st.builds(branch_of, st.one_of(st.integers(0, 14), st.integers(MAX_BRANCH - 3, MAX_BRANCH)),
                     st.binary(max_size=4), st.booleans())
well_formed_notify = st.builds(
    lambda fields, extra: [*fields, *extra],
    st.tuples(st.text(min_size=1, max_size=128), hex_bytes(hash32), coinbase_parts, coinbase_parts, branches,
              hex_bytes(u32s.map(lambda v: v.to_bytes(4, "big"))), hex_bytes(u32s.map(lambda v: v.to_bytes(4, "big"))),
              hex_bytes(u32s.map(lambda v: v.to_bytes(4, "big"))), st.booleans()),
    st.lists(scalars, max_size=2))

# One field broken (the rest well formed): must be refused, counted, and leave the current job in place.
BAD_NOTIFY_FIELD = [
    st.one_of(st.just(""), st.text(min_size=129, max_size=160), not_strings),  # job_id
    bad_hex(32),  # prevhash
    bad_hex(None),  # coinb1
    bad_hex(None),  # coinb2
    st.one_of(not_strings.filter(lambda v: not isinstance(v, list)), st.text(max_size=10),  # merkle branch
              st.builds(branch_of, st.integers(MAX_BRANCH + 1, MAX_BRANCH + 4), st.binary(max_size=4), st.booleans()),
              st.builds(lambda good, bad, at: [*good[:at], bad, *good[at:]], branches, bad_hex(32),
                        st.integers(0, MAX_BRANCH))),
    bad_hex(4), bad_hex(4), bad_hex(4),  # version, nbits, ntime
    st.one_of(st.integers(0, 1), st.sampled_from(["true", "false", None, [], {}, 1.0])),  # clean_jobs
]


def break_field(params: list[Any], index: int, bad: Any) -> list[Any]:
    """Field ``index`` replaced by ``bad``; index 9: only the first ``bad`` (< 9) params are sent."""
    return params[:bad] if index == len(BAD_NOTIFY_FIELD) else [*params[:index], bad, *params[index + 1:]]


one_bad_notify = st.integers(0, len(BAD_NOTIFY_FIELD)).flatmap(
    lambda i: st.builds(break_field, well_formed_notify, st.just(i),
                        BAD_NOTIFY_FIELD[i] if i < len(BAD_NOTIFY_FIELD) else st.integers(0, 8)))

# Mostly well formed (they reach header building, work and share checks); one bad field, and garbage, a fifth each.
NOTIFY_KINDS = {"good": well_formed_notify, "bad": one_bad_notify, "any": garbage_notify}
notify_cases = st.sampled_from(["good", "bad", "any", "good", "good"]).flatmap(
    lambda kind: st.tuples(st.just(kind), NOTIFY_KINDS[kind]))

# The JSON text of the value, so literals json.dumps would never write (1e400) go out as a pool sends them.
difficulties = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(json.dumps),
    st.integers(min_value=-(2**70), max_value=2**1100).map(str),
    st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "1e-300", "0", "-0.0", "1e300", "5e-324", "true",
                     '"1"', "[1]", "{}", "1e18", "1.0000001e18", "2.3283064365386963e-10"]),
    json_values.map(json.dumps))
RANGE = DifficultyRange.for_hashrate(1e6)  # the fuzzed client's


def number_texts(value: float) -> st.SearchStrategy[str]:
    """The ways a pool may write this number: repr, exponent forms, an integer when whole."""
    forms = [repr(value), f"{value:e}", f"{value:E}", f"{value:.17g}"]
    if value.is_integer() and abs(value) < 1e30:
        forms.append(str(int(value)))
    return st.sampled_from(forms)


# Numbers around and inside the accepted range (its edges and one step past them, log-uniform inside).
near_range = st.one_of(
    st.floats(-12.0, 20.0).map(lambda e: 10.0**e),
    st.sampled_from([RANGE.low, RANGE.high, math.nextafter(RANGE.low, 0), math.nextafter(RANGE.high, math.inf), 1.0,
                     RANGE.governed_below, RANGE.slow_above, -1.0, -RANGE.high]),
    st.integers(1, 2**64).map(float))
difficulty_cases = st.sampled_from(["number", "number", "number", "any"]).flatmap(
    lambda kind: near_range.flatmap(number_texts) if kind == "number" else difficulties)


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


@pytest.fixture(scope="module")
def reached() -> Iterator[dict[str, int]]:
    """Notify cases run, and how many became a job / a validated share (the share of cases that reach the job
    path must stay large, or the fuzzing only exercises the refusals)."""
    counts = {"cases": 0, "jobs": 0, "shares": 0, "difficulties": 0, "difficulties used": 0,
              "session messages": 0, "session messages used": 0}
    yield counts
    if counts["cases"] >= 200:
        assert counts["jobs"] >= 0.3 * counts["cases"], counts
        assert counts["shares"] >= 0.05 * counts["cases"], counts
    if counts["difficulties"] >= 200:
        assert counts["difficulties used"] >= 0.3 * counts["difficulties"], counts
    if counts["session messages"] >= 200:
        assert counts["session messages used"] >= 0.3 * counts["session messages"], counts


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


def dsha(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def reference_header(params: list[Any], extranonce1: bytes, extranonce2: bytes, *, ntime: int, nonce: int,
                     version: int) -> bytes:
    """The 80-byte header straight from the notify fields with hashlib (protocols.md), not the agent's helpers."""
    root = dsha(bytes.fromhex(params[2]) + extranonce1 + extranonce2 + bytes.fromhex(params[3]))
    for entry in params[4]:
        root = dsha(root + bytes.fromhex(entry))
    prev = bytes.fromhex(params[1])
    prev = b"".join(prev[i:i + 4][::-1] for i in range(0, 32, 4))
    return struct.pack("<I", version) + prev + root + struct.pack("<III", ntime, int(params[6], 16), nonce)


# How the pool last set up the session before the notify: extranonce1 (edges 0 and 32 bytes) and size, mask.
session_setups = st.tuples(st.one_of(st.binary(max_size=8), st.binary(min_size=32, max_size=32)), st.integers(1, 16),
                           u32s)


@FUZZ
@given(case=notify_cases, setup=session_setups, en2_seed=st.binary(min_size=16, max_size=16), nonce=u32s,
       flip=u32s, in_mask=st.sampled_from([True, True, True, False]),
       target_bits=st.one_of(st.just(256), st.integers(0, 256)))
def test_fuzz_notify(loop: asyncio.AbstractEventLoop, client: StratumClient, reached: dict[str, int],
                     case: tuple[str, list[Any]], setup: tuple[bytes, int, int], en2_seed: bytes, nonce: int,
                     flip: int, in_mask: bool, target_bits: int) -> None:
    kind, params = case
    en1, en2_size, mask = setup
    deliver(loop, client, line_of("mining.set_extranonce", [en1.hex(), en2_size]))
    deliver(loop, client, line_of("mining.set_version_mask", [f"{mask:08x}"]))
    assert (client.extranonce1, client.extranonce2_size) == (en1, en2_size)
    assert client.version_mask == mask & client.options.version_mask
    before, bad_before = client.last_job, client.bad_lines
    deliver(loop, client, line_of("mining.notify", params))
    job = client.last_job
    parsed = job is not None and job is not before
    reached["cases"] += 1
    check_bounded(client)
    if kind == "bad" or (kind == "any" and not parsed):
        assert not parsed and client.bad_lines == bad_before + 1  # refused and counted, the old job kept
        return
    assert parsed and job is not None and client.bad_lines == bad_before
    reached["jobs"] += 1
    # Work as the agent makes it: extranonce2 of the session's size, ntime rolled forward (capped), the header.
    en2 = en2_seed[:client.extranonce2_size]
    ntime = min(job.ntime + 7200, 0xFFFFFFFF)
    header = job.header(client.extranonce1, en2, ntime=ntime, nonce=nonce, version=job.version)
    raw = header.serialize()
    assert len(raw) == 80
    assert raw == reference_header(params, en1, en2, ntime=ntime, nonce=nonce, version=int(params[5], 16))
    assert header.hash() == dsha(raw)
    # The hardware rolls version bits (inside the mask, or a faulty chip outside it); the agent re-checks the nonce.
    version = job.version ^ (flip & client.version_mask if in_mask else flip)
    target = (1 << target_bits) - 1
    validator = WorkValidator(WorkItem(1, 0, header.with_nonce(0), client.version_mask, target))
    expected = dsha(reference_header(params, en1, en2, ntime=ntime, nonce=nonce, version=version))
    meets = int.from_bytes(expected, "little") <= target
    legal = (version ^ job.version) & ~client.version_mask & 0xFFFFFFFF == 0
    try:
        digest = validator.digest(nonce, version)
    except InvalidNonce:
        assert not (legal and meets)
    else:
        assert legal and meets and digest == expected
        reached["shares"] += 1
        # The share as submitted: the pool rebuilds exactly this header from the submit fields.
        share = Share(job.job_id, en2, ntime, nonce, version, job.version, client.version_mask)
        sent = share.submit_params("me.rig")
        assert sent[1] == params[0] and bytes.fromhex(sent[2]) == en2
        assert (int(sent[3], 16), int(sent[4], 16)) == (ntime, nonce)
        bits = int(sent[5], 16) if len(sent) > 5 else 0
        assert apply_version_bits(int(params[5], 16), bits, client.version_mask) == version
        assert len(sent) == (6 if client.version_mask else 5)


@FUZZ
@given(raw=difficulty_cases)
def test_fuzz_set_difficulty(loop: asyncio.AbstractEventLoop, client: StratumClient, reached: dict[str, int],
                             raw: str) -> None:
    before, refused = client.difficulty, client.difficulty_rejections
    deliver(loop, client, f'{{"id":null,"method":"mining.set_difficulty","params":[{raw}]}}\n'.encode())
    check_bounded(client)
    try:
        value = json.loads(raw)
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except (ValueError, OverflowError):
        number = math.nan
    reached["difficulties"] += 1
    if RANGE.low <= number <= RANGE.high:  # used as sent
        assert client.difficulty == number and client.difficulty_rejections == refused
        reached["difficulties used"] += 1
    else:  # refused, counted, the previous value kept
        assert client.difficulty == before and client.difficulty_rejections == refused + 1


# Well-formed session messages with hostile values, each labelled whether it must be used (True) or refused.
def labelled(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[bool, Any]]:
    """Mostly a good value (so the message is used), else a bad one."""
    return st.sampled_from([True, True, True, True, False]).flatmap(
        lambda ok: (good if ok else bad).map(lambda v: (ok, v)))


def joined(*fields: tuple[bool, Any]) -> tuple[bool, list[Any]]:
    return all(ok for ok, _ in fields), [value for _, value in fields]


full_extranonce = st.builds(
    joined,
    labelled(hex_bytes(st.one_of(st.binary(max_size=32), st.binary(min_size=32, max_size=32))),
             st.one_of(hex_bytes(st.binary(min_size=33, max_size=40)), bad_hex(None))),
    labelled(st.integers(1, 16), st.one_of(st.integers(-3, 0), st.integers(17, 2**70), st.booleans(),
                                           st.floats(allow_nan=True), st.sampled_from(["4", None, [4]]))),
)
short_extranonce = st.lists(st.one_of(hex_bytes(st.binary(max_size=8)), st.integers(1, 16)), max_size=1)
extranonce_cases = st.sampled_from([True] * 5 + [False]).flatmap(
    lambda full: full_extranonce if full else short_extranonce.map(lambda p: (False, p)))
mask_cases = st.builds(joined, labelled(hex_bytes(u32s.map(lambda v: v.to_bytes(4, "big"))), bad_hex(4)))
ports = labelled(st.one_of(st.integers(1, 65535), st.integers(1, 65535).map(str), st.sampled_from([None, ""])),
                 st.one_of(st.integers(-(2**70), 0), st.integers(65536, 2**70), st.sampled_from(["abc", "1e3", "0x50",
                                                                                                 [], {}, "-1"])))
reconnect_cases = st.builds(lambda host, port, wait: (port[0], [host, port[1], *wait]),
                            st.sampled_from(["127.0.0.1", "", None, 5, "evil.example", "10.0.0.1", "127.0.0.1."]),
                            ports, st.lists(st.integers(0, 2**40), max_size=1))
SESSION_CASES = {"mining.set_extranonce": extranonce_cases, "mining.set_version_mask": mask_cases,
                 "client.reconnect": reconnect_cases}


def check_session_message(client: StratumClient, method: str, params: list[Any], ok: bool,
                          before: tuple[bytes, int, int, int]) -> None:
    """Used exactly as sent, or refused and counted with the session unchanged."""
    en1, size, mask, bad = before
    state = (client.extranonce1, client.extranonce2_size, client.version_mask)
    if not ok:
        assert state == (en1, size, mask) and client.bad_lines == bad + 1 and not client.closed.is_set()
        return
    assert client.bad_lines == bad
    if method == "mining.set_extranonce":
        assert state == (bytes.fromhex(params[0]), params[1], mask)
    elif method == "mining.set_version_mask":
        assert state == (en1, size, int(params[0], 16) & client.options.version_mask)
    else:  # a reconnect is followed only to the pool's own host (no unlisted hosts here)
        host = params[0] if isinstance(params[0], str) and params[0] else "127.0.0.1"
        port = int(params[1]) if params[1] not in (None, "") else 3333
        assert client.closed.is_set() == (host == "127.0.0.1")
        assert client.reconnect_target == ((host, port) if host == "127.0.0.1" else None)


session_or_any = st.sampled_from(["session", "session", "any"]).flatmap(
    lambda kind: st.sampled_from(sorted(SESSION_CASES)).flatmap(
        lambda method: st.tuples(st.just(method), SESSION_CASES[method])) if kind == "session" else
    st.tuples(st.sampled_from(["mining.set_extranonce", "mining.set_version_mask", "client.reconnect",
                               "client.show_message", "client.get_version", "mining.ping", "x.unknown",
                               "mining.set_difficulty", "mining.notify"]),
              st.one_of(st.lists(json_values, max_size=4), json_values).map(lambda p: (None, p))))


@FUZZ
@given(case=session_or_any, msg_id=st.one_of(st.none(), json_values))
def test_fuzz_other_methods(loop: asyncio.AbstractEventLoop, client: StratumClient, reached: dict[str, int],
                            case: tuple[str, tuple[bool | None, Any]], msg_id: Any) -> None:
    method, (ok, params) = case
    before = (client.extranonce1, client.extranonce2_size, client.version_mask, client.bad_lines)
    if ok is not None:
        msg_id = None  # a notification, as pools send them (an id is fuzzed with the garbage)
    deliver(loop, client, json.dumps({"id": msg_id, "method": method, "params": params}).encode() + b"\n")
    if ok is not None:
        check_session_message(client, method, params, ok, before)
        reached["session messages"] += 1
        reached["session messages used"] += ok
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
