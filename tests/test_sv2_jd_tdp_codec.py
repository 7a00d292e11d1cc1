"""Job Declaration and Template Distribution messages: spec types and layout, round trips, hostile bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmos.stratum.v2.codec import Sv2CodecError
from openmos.stratum.v2.framing import decode_frame, encode_message
from openmos.stratum.v2.job_declaration import JOB_DECLARATION, DeclareMiningJob, PushSolution
from openmos.stratum.v2.messages import MESSAGES, Message
from openmos.stratum.v2.template_distribution import TEMPLATE_DISTRIBUTION, NewTemplate, TdpSetNewPrevHash
from test_sv2_codec import message_strategy

# sv2-spec 08-Message-Types.md
EXPECTED = {
    0x50: "AllocateMiningJobToken", 0x51: "AllocateMiningJobTokenSuccess", 0x55: "ProvideMissingTransactions",
    0x56: "ProvideMissingTransactionsSuccess", 0x57: "DeclareMiningJob", 0x58: "DeclareMiningJobSuccess",
    0x59: "DeclareMiningJobError", 0x60: "PushSolution", 0x70: "CoinbaseOutputConstraints", 0x71: "NewTemplate",
    0x72: "TdpSetNewPrevHash", 0x73: "RequestTransactionData", 0x74: "RequestTransactionDataSuccess",
    0x75: "RequestTransactionDataError", 0x76: "SubmitSolution",
}
ALL = JOB_DECLARATION + TEMPLATE_DISTRIBUTION


def test_types_and_no_channel_bit() -> None:
    assert {cls.MSG_TYPE: cls.__name__ for cls in ALL} == EXPECTED
    for cls in ALL:
        assert not cls.CHANNEL_MSG and cls.EXTENSION == 0
        assert MESSAGES[(0, cls.MSG_TYPE)] is cls


def test_field_types_follow_the_spec_tables() -> None:
    names = {cls.__name__: [(n, c.name) for n, c in cls.FIELDS] for cls in ALL}
    assert names["DeclareMiningJob"] == [
        ("request_id", "U32"), ("mining_job_token", "B0_255"), ("version", "U32"),
        ("coinbase_tx_prefix", "B0_64K"), ("coinbase_tx_suffix", "B0_64K"),
        ("wtxid_list", "SEQ0_64K[U256]"), ("excess_data", "B0_64K")]
    assert names["NewTemplate"] == [
        ("template_id", "U64"), ("future_template", "BOOL"), ("version", "U32"), ("coinbase_tx_version", "U32"),
        ("coinbase_prefix", "B0_255"), ("coinbase_tx_input_sequence", "U32"),
        ("coinbase_tx_value_remaining", "U64"), ("coinbase_tx_outputs_count", "U32"),
        ("coinbase_tx_outputs", "B0_64K"), ("coinbase_tx_locktime", "U32"), ("merkle_path", "SEQ0_255[U256]")]
    assert names["ProvideMissingTransactionsSuccess"] == [
        ("request_id", "U32"), ("transaction_list", "SEQ0_64K[B0_16M]")]
    assert names["CoinbaseOutputConstraints"] == [
        ("coinbase_output_max_additional_size", "U32"), ("coinbase_output_max_additional_sigops", "U16")]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip(cls: type[Message], data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls))
    wire = encode_message(msg)
    assert wire[:2] == b"\x00\x00" and wire[2] == cls.MSG_TYPE
    assert decode_frame(wire).message() == msg


def test_known_encoding_of_declare_mining_job() -> None:
    """Byte layout by hand from sv2-spec 3.1 and 6.4.4."""
    msg = DeclareMiningJob(7, b"tk", 0x20000000, b"\x01\x02", b"", (b"\xaa" * 32,), b"\x05")
    payload = (b"\x07\x00\x00\x00" + b"\x02tk" + b"\x00\x00\x00\x20" + b"\x02\x00\x01\x02" + b"\x00\x00"
               + b"\x01\x00" + b"\xaa" * 32 + b"\x01\x00\x05")
    assert encode_message(msg) == b"\x00\x00\x57" + len(payload).to_bytes(3, "little") + payload


def test_known_encoding_of_tdp_set_new_prev_hash_and_push_solution() -> None:
    msg = TdpSetNewPrevHash(1, b"\x11" * 32, 1_700_000_000, 0x1D00FFFF, b"\xff" * 32)
    payload = (b"\x01" + b"\x00" * 7 + b"\x11" * 32 + (1_700_000_000).to_bytes(4, "little")
               + b"\xff\xff\x00\x1d" + b"\xff" * 32)
    assert encode_message(msg) == b"\x00\x00\x72" + len(payload).to_bytes(3, "little") + payload
    sol = PushSolution(b"\x01\x02", b"\x22" * 32, 5, 6, 7, 8)
    assert encode_message(sol)[6:] == b"\x02\x01\x02" + b"\x22" * 32 + bytes.fromhex("05000000060000000700000008000000")


def test_hostile_lengths_are_refused() -> None:
    ok = encode_message(NewTemplate(1, False, 2, 2, b"", 0, 0, 0, b"", 0, ()))
    # merkle_path says 200 hashes but carries none
    bad = bytearray(ok)
    bad[-1] = 200
    with pytest.raises(Sv2CodecError, match="merkle_path"):
        decode_frame(bytes(bad)).message()
    with pytest.raises(Sv2CodecError, match="wtxid_list"):
        encode_message(DeclareMiningJob(1, b"", 0, b"", b"", (b"short",), b""))


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([cls.MSG_TYPE for cls in ALL]))
def test_fuzz_decoder_raises_only_codec_errors(payload: bytes, msg_type: int) -> None:
    wire = b"\x00\x00" + bytes([msg_type]) + len(payload).to_bytes(3, "little") + payload
    with contextlib.suppress(Sv2CodecError):
        msg = decode_frame(wire).message()
        assert isinstance(msg, Message)
        assert decode_frame(encode_message(msg)).message() == msg  # whatever decodes re-encodes faithfully
