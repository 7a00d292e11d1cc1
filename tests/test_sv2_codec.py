"""Stratum V2 codec: every data type, every Common and Mining message round-trips; the decoder only ever
raises Sv2CodecError on hostile bytes."""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmos.stratum.v2.codec import (
    B0_16M,
    B0_32,
    B0_64K,
    B0_255,
    BOOL,
    F32,
    FLOAT32,
    OPTION,
    PUBKEY,
    SEQ0_64K,
    SEQ0_255,
    SIGNATURE,
    STR0_255,
    U8,
    U16,
    U24,
    U32,
    U64,
    U256,
    Bool,
    Codec,
    FixedBytes,
    Option,
    Reader,
    Seq,
    Str0_255,
    Sv2CodecError,
    UInt,
    VarBytes,
)
from openmos.stratum.v2.framing import MAX_PAYLOAD, decode_frame, decode_header, encode_message
from openmos.stratum.v2.messages import COMMON_AND_MINING, MESSAGES, Message, SetupConnection

EXPECTED_MESSAGES = {
    0x00: "SetupConnection", 0x01: "SetupConnectionSuccess", 0x02: "SetupConnectionError",
    0x03: "ChannelEndpointChanged", 0x04: "Reconnect", 0x10: "OpenStandardMiningChannel",
    0x11: "OpenStandardMiningChannelSuccess", 0x12: "OpenMiningChannelError", 0x13: "OpenExtendedMiningChannel",
    0x14: "OpenExtendedMiningChannelSuccess", 0x15: "NewMiningJob", 0x16: "UpdateChannel",
    0x17: "UpdateChannelError", 0x18: "CloseChannel", 0x19: "SetExtranoncePrefix", 0x1A: "SubmitSharesStandard",
    0x1B: "SubmitSharesExtended", 0x1C: "SubmitSharesSuccess", 0x1D: "SubmitSharesError",
    0x1F: "NewExtendedMiningJob", 0x20: "SetNewPrevHash", 0x21: "SetTarget", 0x22: "SetCustomMiningJob",
    0x23: "SetCustomMiningJobSuccess", 0x24: "SetCustomMiningJobError", 0x25: "SetGroupChannel",
}
# sv2-spec 08-Message-Types: which messages carry the channel_msg bit.
CHANNEL_BIT = {0x03, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x24}


def strategy(codec: Codec[Any], small: bool = True) -> st.SearchStrategy[Any]:
    if isinstance(codec, UInt):
        return st.integers(0, codec.limit - 1)
    if isinstance(codec, Bool):
        return st.booleans()
    if isinstance(codec, F32):
        return st.floats(width=32, allow_nan=False)
    if isinstance(codec, FixedBytes):
        return st.binary(min_size=codec.size, max_size=codec.size)
    if isinstance(codec, VarBytes):
        return st.binary(max_size=min(codec.maximum, 300 if small else codec.maximum))
    if isinstance(codec, Str0_255):
        return st.text(max_size=60).filter(lambda s: len(s.encode()) <= 255)
    if isinstance(codec, Option):
        return st.none() | strategy(codec.seq.item)
    if isinstance(codec, Seq):
        return st.lists(strategy(codec.item), max_size=min(codec.maximum, 12)).map(tuple)
    raise AssertionError(codec)


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    return st.builds(cls, **{name: strategy(codec) for name, codec in cls.FIELDS})


def test_every_common_and_mining_message_is_defined_with_its_spec_type_and_channel_bit() -> None:
    got = {cls.MSG_TYPE: cls.__name__ for cls in COMMON_AND_MINING}
    assert got == EXPECTED_MESSAGES
    for cls in COMMON_AND_MINING:
        assert (cls.MSG_TYPE in CHANNEL_BIT) == cls.CHANNEL_MSG, cls.__name__
        if cls.CHANNEL_MSG:  # channel messages start with the U32 channel_id
            assert cls.FIELDS[0] == ("channel_id", U32), cls.__name__


@pytest.mark.parametrize("cls", COMMON_AND_MINING, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_message_round_trip(cls: type[Message], data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls))
    wire = encode_message(msg)
    frame = decode_frame(wire)
    assert frame.msg_type == cls.MSG_TYPE and frame.channel_msg == cls.CHANNEL_MSG
    ext = int.from_bytes(wire[:2], "little")
    assert bool(ext & 0x8000) == cls.CHANNEL_MSG
    assert frame.message() == msg


def test_known_encoding_of_setup_connection() -> None:
    """Byte layout by hand from sv2-spec 3.1/3.2/3.6.1: little endian, U8 length prefixes."""
    msg = SetupConnection(0, 2, 2, 0b101, "pool", 3333, "OpenMOS", "S21", "1.0", "")
    payload = (b"\x00" + b"\x02\x00" + b"\x02\x00" + b"\x05\x00\x00\x00" + b"\x04pool" + b"\x05\x0d"
               + b"\x07OpenMOS" + b"\x03S21" + b"\x031.0" + b"\x00")
    assert encode_message(msg) == b"\x00\x00" + b"\x00" + len(payload).to_bytes(3, "little") + payload


@pytest.mark.parametrize(("codec", "value", "wire"), [
    (U8, 0xAB, b"\xab"), (U16, 0x1234, b"\x34\x12"), (U24, 0x123456, b"\x56\x34\x12"),
    (U32, 0x12345678, b"\x78\x56\x34\x12"), (U64, 1, b"\x01" + b"\0" * 7),
    (U256, bytes(range(32)), bytes(range(32))), (BOOL, True, b"\x01"), (FLOAT32, 1.5, struct.pack("<f", 1.5)),
    (STR0_255, "ab", b"\x02ab"), (B0_32, b"\x01", b"\x01\x01"), (B0_255, b"", b"\x00"),
    (B0_64K, b"xy", b"\x02\x00xy"), (B0_16M, b"z", b"\x01\x00\x00z"), (PUBKEY, b"\x02" * 32, b"\x02" * 32),
    (SIGNATURE, b"\x03" * 64, b"\x03" * 64), (SEQ0_255(U16), (1, 2), b"\x02\x01\x00\x02\x00"),
    (SEQ0_64K(U32), (7,), b"\x01\x00\x07\x00\x00\x00"), (OPTION(U32), None, b"\x00"),
    (OPTION(U32), 9, b"\x01\x09\x00\x00\x00"),
])
def test_data_type_encodings(codec: Codec[Any], value: Any, wire: bytes) -> None:
    out = bytearray()
    codec.write(out, value)
    assert bytes(out) == wire
    r = Reader(wire)
    assert codec.read(r) == value and r.remaining() == 0


def test_bool_reads_only_the_low_bit() -> None:
    assert BOOL.read(Reader(b"\xfe")) is False and BOOL.read(Reader(b"\x03")) is True


def test_b0_16m_carries_more_than_64k() -> None:
    big = bytes(70_000)
    out = bytearray()
    B0_16M.write(out, big)
    assert B0_16M.read(Reader(bytes(out))) == big


@pytest.mark.parametrize(("codec", "value"), [
    (U8, 256), (U16, -1), (U32, 1 << 32), (U32, True), (U32, 1.0), (U256, b"\0" * 31), (B0_32, b"\0" * 33),
    (B0_255, b"\0" * 256), (B0_64K, b"\0" * 65536), (STR0_255, "é" * 128), (SEQ0_255(U8), tuple(range(256))),
    (OPTION(U8), (1, 2)), (FLOAT32, 1e39), (FLOAT32, "1"), (BOOL, 1), (PUBKEY, b"\0" * 33),
])
def test_unencodable_values_are_refused(codec: Codec[Any], value: Any) -> None:
    with pytest.raises(Sv2CodecError):
        codec.write(bytearray(), value)


@pytest.mark.parametrize(("codec", "wire"), [
    (U32, b"\x01\x02"), (B0_32, b"\x21" + bytes(33)), (B0_255, b"\x05abc"), (B0_64K, b"\xff\xff"),
    (STR0_255, b"\x02\xff\xfe"), (SEQ0_255(U32), b"\x02\x01\x00\x00\x00"), (OPTION(U8), b"\x02\x01\x01"),
    (SEQ0_64K(U256), b"\xff\xff"),
])
def test_malformed_fields_raise_a_clear_error(codec: Codec[Any], wire: bytes) -> None:
    with pytest.raises(Sv2CodecError):
        codec.read(Reader(wire))


def test_f32_decodes_any_bit_pattern() -> None:
    assert math.isnan(FLOAT32.read(Reader(b"\x00\x00\xc0\x7f")))


def test_frame_limits() -> None:
    header = b"\x00\x00\x00" + (MAX_PAYLOAD + 1).to_bytes(3, "little")
    with pytest.raises(Sv2CodecError, match="limit"):
        decode_header(header)
    assert decode_header(b"\x00\x80\x15\x10\x00\x00") == (0, 0x15, True, 16)
    with pytest.raises(Sv2CodecError):
        decode_frame(b"\x00\x00\x00\x05\x00\x00abc")  # says 5, has 3


def test_channel_bit_mismatch_and_unknown_types() -> None:
    wire = bytearray(encode_message(SetupConnection(0, 2, 2, 0, "", 0, "", "", "", "")))
    wire[1] |= 0x80
    with pytest.raises(Sv2CodecError, match="channel_msg"):
        decode_frame(bytes(wire)).message()
    with pytest.raises(Sv2CodecError, match="unknown message type"):
        decode_frame(b"\x00\x00\x7f\x00\x00\x00").message()
    # An unknown extension's message is ignored, as the spec requires.
    assert decode_frame(b"\x00\x40\x01\x00\x00\x00").message() is None


def test_trailing_bytes_are_refused() -> None:
    wire = encode_message(SetupConnection(0, 2, 2, 0, "", 0, "", "", "", ""))
    wire = wire[:3] + (int.from_bytes(wire[3:6], "little") + 1).to_bytes(3, "little") + wire[6:] + b"\0"
    with pytest.raises(Sv2CodecError, match="trailing"):
        decode_frame(wire).message()


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(sorted(MESSAGES)))
def test_fuzz_decoder_raises_only_codec_errors(payload: bytes, key: tuple[int, int]) -> None:
    cls = MESSAGES[key]
    wire = ((0x8000 if cls.CHANNEL_MSG else 0).to_bytes(2, "little") + bytes([key[1]])
            + len(payload).to_bytes(3, "little") + payload)
    with contextlib.suppress(Sv2CodecError):
        decode_frame(wire).message()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_raw_frames(wire: bytes) -> None:
    with contextlib.suppress(Sv2CodecError):
        decode_frame(wire).message()
