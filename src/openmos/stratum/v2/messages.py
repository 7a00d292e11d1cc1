"""Every Common and Mining sub-protocol message (sv2-spec sections 3.6 and 5.3), as frozen dataclasses.

Each message is a class under ``@message(type, channel=...)`` whose fields are annotated with their SV2 data
types; ``encode_payload`` / ``decode_payload`` walk those annotations, so the field order here *is* the wire
order. ``MESSAGES`` maps (extension type, message type)
to the class; Job Declaration and Template Distribution messages can be registered the same way.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar, dataclass_transform, get_type_hints

from openmos.stratum.v2.codec import (
    B0_32,
    B0_64K,
    B0_255,
    BOOL,
    FLOAT32,
    OPTION,
    SEQ0_64K,
    SEQ0_255,
    STR0_255,
    U8,
    U16,
    U32,
    U64,
    U256,
    Codec,
    FixedBytes,
    Reader,
    Sv2CodecError,
    UInt,
)

# SetupConnection.protocol
PROTOCOL_MINING = 0
PROTOCOL_JOB_DECLARATION = 1
PROTOCOL_TEMPLATE_DISTRIBUTION = 2

# SetupConnection.flags for the Mining Protocol (client -> server)
REQUIRES_STANDARD_JOBS = 1 << 0
REQUIRES_WORK_SELECTION = 1 << 1
REQUIRES_VERSION_ROLLING = 1 << 2
# SetupConnection.Success.flags (server -> client)
REQUIRES_FIXED_VERSION = 1 << 0
REQUIRES_EXTENDED_CHANNELS = 1 << 1


class Message:
    """Base of every SV2 message: ``MSG_TYPE``, ``CHANNEL_MSG`` bit, ``EXTENSION`` and the field codecs."""

    MSG_TYPE: ClassVar[int]
    CHANNEL_MSG: ClassVar[bool]
    EXTENSION: ClassVar[int] = 0
    FIELDS: ClassVar[tuple[tuple[str, Codec[Any]], ...]]
    # Messages made only of U8/U16/U32/U64/fixed-size fields (shares, their answers, SetTarget...) are
    # packed with one precompiled struct: the hot path of a pool or proxy.
    PACKED: ClassVar[struct.Struct | None] = None
    PACKED_BYTES: ClassVar[tuple[tuple[int, int], ...]] = ()  # (field index, size) of fixed-bytes fields


M = TypeVar("M", bound=type[Message])

MESSAGES: dict[tuple[int, int], type[Message]] = {}


@dataclass_transform(frozen_default=True)
def message(msg_type: int, *, channel: bool, extension: int = 0) -> Callable[[M], M]:
    """Class decorator: the class becomes a frozen dataclass, registered in ``MESSAGES`` under its wire identity
    with the codecs of its annotated fields (in wire order)."""

    def wrap(cls: M) -> M:
        dataclass(frozen=True)(cls)  # in place: the same class object comes back
        hints = get_type_hints(cls, include_extras=True)
        fields = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            meta = getattr(hints[f.name], "__metadata__", ())
            codec = next((m for m in meta if isinstance(m, Codec)), None)
            if codec is None:
                raise TypeError(f"{cls.__name__}.{f.name} has no SV2 type annotation")
            fields.append((f.name, codec))
        cls.MSG_TYPE, cls.CHANNEL_MSG, cls.EXTENSION, cls.FIELDS = msg_type, channel, extension, tuple(fields)
        cls.PACKED, cls.PACKED_BYTES = _packed_layout(cls.FIELDS)
        key = (extension, msg_type)
        if key in MESSAGES:
            raise TypeError(f"message type {key} registered twice")
        MESSAGES[key] = cls
        return cls

    return wrap


def largest_payload(*classes: type[Message]) -> int:
    """The most bytes a payload of any of these messages can take: what a peer expecting only them needs to
    read (a frame claiming more is refused before its payload is buffered)."""
    return max(sum(codec.max_size for _, codec in cls.FIELDS) for cls in classes)


_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _packed_layout(fields: tuple[tuple[str, Codec[Any]], ...]
                   ) -> tuple[struct.Struct | None, tuple[tuple[int, int], ...]]:
    fmt, fixed = "<", []
    for i, (_, codec) in enumerate(fields):
        if isinstance(codec, UInt) and codec.size in _INT_CODES:
            fmt += _INT_CODES[codec.size]
        elif isinstance(codec, FixedBytes):
            fmt += f"{codec.size}s"
            fixed.append((i, codec.size))
        else:
            return None, ()
    return struct.Struct(fmt), tuple(fixed)


def encode_payload(msg: Message) -> bytes:
    packed = msg.PACKED
    if packed is not None:
        values = [getattr(msg, name) for name, _ in msg.FIELDS]
        if all(type(v) is int or type(v) is bytes for v in values) \
                and all(len(values[i]) == size for i, size in msg.PACKED_BYTES):
            try:
                return packed.pack(*values)
            except struct.error:
                pass  # out of range: the generic path names the field
    out = bytearray()
    for name, codec in msg.FIELDS:
        try:
            codec.write(out, getattr(msg, name))
        except Sv2CodecError as exc:
            raise Sv2CodecError(f"{type(msg).__name__}.{name}: {exc}") from None
    return bytes(out)


def decode_payload(cls: type[Message], payload: bytes) -> Message:
    packed = cls.PACKED
    if packed is not None and len(payload) == packed.size:
        fast: Message = cls(*packed.unpack(payload))
        return fast
    r = Reader(payload)
    values = {}
    for name, codec in cls.FIELDS:
        try:
            values[name] = codec.read(r)
        except Sv2CodecError as exc:
            raise Sv2CodecError(f"{cls.__name__}.{name}: {exc}") from None
    if r.remaining():
        # Extensions may append TLV fields; a core message with unnegotiated trailing bytes is malformed.
        raise Sv2CodecError(f"{cls.__name__}: {r.remaining()} unexpected trailing bytes")
    msg: Message = cls(**values)
    return msg


# -- Common protocol (3.6) ------------------------------------------------------------------------------


@message(0x00, channel=False)
class SetupConnection(Message):
    protocol: Annotated[int, U8]
    min_version: Annotated[int, U16]
    max_version: Annotated[int, U16]
    flags: Annotated[int, U32]
    endpoint_host: Annotated[str, STR0_255]
    endpoint_port: Annotated[int, U16]
    vendor: Annotated[str, STR0_255]
    hardware_version: Annotated[str, STR0_255]
    firmware: Annotated[str, STR0_255]
    device_id: Annotated[str, STR0_255]


@message(0x01, channel=False)
class SetupConnectionSuccess(Message):
    used_version: Annotated[int, U16]
    flags: Annotated[int, U32]


@message(0x02, channel=False)
class SetupConnectionError(Message):
    flags: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message(0x03, channel=True)
class ChannelEndpointChanged(Message):
    channel_id: Annotated[int, U32]


@message(0x04, channel=False)
class Reconnect(Message):
    new_host: Annotated[str, STR0_255]
    new_port: Annotated[int, U16]


# -- Mining protocol (5.3) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OpenMiningChannel(Message):
    """The fields both channel requests begin with (not a message: no wire identity)."""

    request_id: Annotated[int, U32]
    user_identity: Annotated[str, STR0_255]
    nominal_hash_rate: Annotated[float, FLOAT32]
    max_target: Annotated[bytes, U256]


@message(0x10, channel=False)
class OpenStandardMiningChannel(_OpenMiningChannel):
    pass


@message(0x11, channel=False)
class OpenStandardMiningChannelSuccess(Message):
    request_id: Annotated[int, U32]
    channel_id: Annotated[int, U32]
    target: Annotated[bytes, U256]
    extranonce_prefix: Annotated[bytes, B0_32]
    group_channel_id: Annotated[int, U32]


@message(0x12, channel=False)
class OpenMiningChannelError(Message):
    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message(0x13, channel=False)
class OpenExtendedMiningChannel(_OpenMiningChannel):
    """OpenStandardMiningChannel's fields, then the smallest extranonce the client can work with."""

    min_extranonce_size: Annotated[int, U16]


@message(0x14, channel=False)
class OpenExtendedMiningChannelSuccess(Message):
    request_id: Annotated[int, U32]
    channel_id: Annotated[int, U32]
    target: Annotated[bytes, U256]
    extranonce_size: Annotated[int, U16]
    extranonce_prefix: Annotated[bytes, B0_32]
    group_channel_id: Annotated[int, U32]


@message(0x15, channel=True)
class NewMiningJob(Message):
    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    min_ntime: Annotated[int | None, OPTION(U32)]
    version: Annotated[int, U32]
    merkle_root: Annotated[bytes, U256]


@message(0x16, channel=True)
class UpdateChannel(Message):
    channel_id: Annotated[int, U32]
    nominal_hash_rate: Annotated[float, FLOAT32]
    maximum_target: Annotated[bytes, U256]


@message(0x17, channel=True)
class UpdateChannelError(Message):
    channel_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message(0x18, channel=True)
class CloseChannel(Message):
    channel_id: Annotated[int, U32]
    reason_code: Annotated[str, STR0_255]


@message(0x19, channel=True)
class SetExtranoncePrefix(Message):
    channel_id: Annotated[int, U32]
    extranonce_prefix: Annotated[bytes, B0_32]


@dataclass(frozen=True)
class _SubmitShares(Message):
    """The fields both share submissions begin with (not a message: no wire identity)."""

    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    job_id: Annotated[int, U32]
    nonce: Annotated[int, U32]
    ntime: Annotated[int, U32]
    version: Annotated[int, U32]


@message(0x1A, channel=True)
class SubmitSharesStandard(_SubmitShares):
    pass


@message(0x1B, channel=True)
class SubmitSharesExtended(_SubmitShares):
    """SubmitSharesStandard's fields, then the extranonce: the spec defines it as that message plus one field."""

    extranonce: Annotated[bytes, B0_32]


@message(0x1C, channel=True)
class SubmitSharesSuccess(Message):
    channel_id: Annotated[int, U32]
    last_sequence_number: Annotated[int, U32]
    new_submits_accepted_count: Annotated[int, U32]
    new_shares_sum: Annotated[int, U64]


@message(0x1D, channel=True)
class SubmitSharesError(Message):
    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message(0x1F, channel=True)
class NewExtendedMiningJob(Message):
    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    min_ntime: Annotated[int | None, OPTION(U32)]
    version: Annotated[int, U32]
    version_rolling_allowed: Annotated[bool, BOOL]
    merkle_path: Annotated[tuple[bytes, ...], SEQ0_255(U256)]
    coinbase_tx_prefix: Annotated[bytes, B0_64K]
    coinbase_tx_suffix: Annotated[bytes, B0_64K]


@message(0x20, channel=True)
class SetNewPrevHash(Message):
    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    prev_hash: Annotated[bytes, U256]
    min_ntime: Annotated[int, U32]
    nbits: Annotated[int, U32]


@message(0x21, channel=True)
class SetTarget(Message):
    channel_id: Annotated[int, U32]
    maximum_target: Annotated[bytes, U256]


@message(0x22, channel=True)
class SetCustomMiningJob(Message):
    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    mining_job_token: Annotated[bytes, B0_255]
    version: Annotated[int, U32]
    prev_hash: Annotated[bytes, U256]
    min_ntime: Annotated[int, U32]
    nbits: Annotated[int, U32]
    coinbase_tx_version: Annotated[int, U32]
    coinbase_prefix: Annotated[bytes, B0_255]
    coinbase_tx_input_nsequence: Annotated[int, U32]
    coinbase_tx_outputs: Annotated[bytes, B0_64K]
    coinbase_tx_locktime: Annotated[int, U32]
    merkle_path: Annotated[tuple[bytes, ...], SEQ0_255(U256)]


@message(0x23, channel=True)
class SetCustomMiningJobSuccess(Message):
    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    job_id: Annotated[int, U32]


@message(0x24, channel=True)
class SetCustomMiningJobError(Message):
    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message(0x25, channel=False)
class SetGroupChannel(Message):
    group_channel_id: Annotated[int, U32]
    channel_ids: Annotated[tuple[int, ...], SEQ0_64K(U32)]


COMMON_AND_MINING: tuple[type[Message], ...] = tuple(MESSAGES.values())
