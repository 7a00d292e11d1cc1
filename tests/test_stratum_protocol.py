"""Message parsing and validation: every bad input gets a ProtocolError that says what was wrong."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openmos.stratum import (
    MAX_LINE_BYTES,
    Notification,
    PoolUrl,
    ProtocolError,
    Request,
    Response,
    StratumJob,
    parse_message,
)
from openmos.stratum.job import Share

GOOD_NOTIFY = ["ab", "00" * 32, "01", "02", ["11" * 32], "20000000", "1d00ffff", "5f5e1000", False]


def test_parse_kinds() -> None:
    assert parse_message(b'{"id":1,"method":"mining.subscribe","params":[]}\n') == \
        Request(1, "mining.subscribe", [])
    assert parse_message('{"id":null,"method":"mining.notify","params":[1]}') == Notification("mining.notify", [1])
    resp = parse_message('{"id":2,"result":true,"error":null}')
    assert isinstance(resp, Response) and resp.ok
    rejected = parse_message('{"id":3,"result":null,"error":[23,"Low difficulty share",null]}')
    assert isinstance(rejected, Response)
    assert rejected.error_code() == 23 and "Low difficulty" in rejected.error_text()


@pytest.mark.parametrize(("line", "why"), [
    (b"not json", "malformed JSON"),
    (b"[1,2,3]", "expected a JSON object"),
    (b'{"id":1}', "neither a method"),
    (b'{"id":1,"method":5}', "method must be"),
    (b'{"id":1,"method":"x","params":"str"}', "must be a JSON array"),
    (b'{"id":[1],"method":"x"}', "id must be"),
    (b"\xff\xfe", "not UTF-8"),
    (b"   \n", "empty line"),
    (b"[" * 100_000, "exceeds"),
])
def test_parse_errors_are_explained(line: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        parse_message(line)


@given(st.binary(max_size=300))
def test_parse_never_raises_anything_but_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_message(data)


def test_line_cap_constant_is_sane() -> None:
    assert 8 * 1024 <= MAX_LINE_BYTES <= 1 << 20


@pytest.mark.parametrize(("index", "value", "why"), [
    (0, "", "job_id"),
    (1, "zz" * 32, "prevhash is not valid hex"),
    (1, "00" * 31, "prevhash must be 32 bytes"),
    (4, "notalist", "merkle branch"),
    (4, ["00" * 31], "merkle branch entry"),
    (5, 536870912, "version must be a hex string"),
    (8, "yes", "clean_jobs"),
])
def test_notify_validation(index: int, value: object, why: str) -> None:
    params = list(GOOD_NOTIFY)
    params[index] = value
    with pytest.raises(ProtocolError, match=why):
        StratumJob.from_notify(params)


def test_notify_too_short() -> None:
    with pytest.raises(ProtocolError, match="9 params"):
        StratumJob.from_notify(GOOD_NOTIFY[:5])


def test_notify_roundtrip() -> None:
    job = StratumJob.from_notify(GOOD_NOTIFY)
    assert job.to_notify_params() == GOOD_NOTIFY
    assert job.version == 0x20000000 and job.nbits == 0x1D00FFFF


def test_share_submit_params_carry_version_bits() -> None:
    share = Share("j", b"\x00\x00\x00\x01", 0x5F5E1000, 0xDEADBEEF, 0x20002000, 0x20000000, 0x1FFFE000)
    assert share.submit_params("w") == ["w", "j", "00000001", "5f5e1000", "deadbeef", "00002000"]
    assert share.pool_version() == 0x20002000
    no_roll = Share("j", b"\x01", 1, 2, 0x20000000, 0x20000000, 0)
    assert len(no_roll.submit_params("w")) == 5


def test_pool_urls() -> None:
    assert PoolUrl.parse("stratum+tcp://pool.example:3333") == PoolUrl("pool.example", 3333, False)
    assert PoolUrl.parse("stratum+ssl://pool.example:443").tls
    for bad, why in [("pool:3333", "needs a scheme"), ("http://x:1", "unsupported"),
                     ("stratum+tcp://:3333", "no host"), ("stratum+tcp://host", "no port"),
                     ("stratum+tcp://host:99999", "invalid port")]:
        with pytest.raises(ValueError, match=why):
            PoolUrl.parse(bad)
