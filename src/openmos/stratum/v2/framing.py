"""SV2 frames (sv2-spec 3.2): ``extension_type U16 | msg_type U8 | msg_length U24`` then the payload.

Bit 15 of ``extension_type`` is ``channel_msg``: the payload then starts with the U32 ``channel_id``.
The U24 length allows 16 MiB; a session accepts at most ``MAX_PAYLOAD`` (the largest Mining Protocol
message, SetGroupChannel with 65,535 channel ids, is 262 KiB) so a peer cannot make us buffer more.
"""

from __future__ import annotations

from dataclasses import dataclass

from openmos.stratum.v2.codec import Sv2CodecError
from openmos.stratum.v2.messages import MESSAGES, Message, decode_payload, encode_payload

HEADER_SIZE = 6
CHANNEL_MSG_BIT = 0x8000
MAX_U24 = 0xFFFFFF
MAX_PAYLOAD = 1 << 20  # per-session cap on one message payload


@dataclass(frozen=True)
class Frame:
    extension_type: int  # without the channel_msg bit
    msg_type: int
    channel_msg: bool
    payload: bytes

    def header(self) -> bytes:
        return encode_header(self.extension_type | (CHANNEL_MSG_BIT if self.channel_msg else 0),
                             self.msg_type, len(self.payload))

    def encode(self) -> bytes:
        return self.header() + self.payload

    def message(self) -> Message | None:
        """The decoded message, or None for an unknown extension (the spec says: ignore it)."""
        cls = MESSAGES.get((self.extension_type, self.msg_type))
        if cls is None:
            if self.extension_type == 0:
                raise Sv2CodecError(f"unknown message type {self.msg_type:#04x}")
            return None
        if self.channel_msg != cls.CHANNEL_MSG:
            raise Sv2CodecError(f"{cls.__name__} sent with channel_msg bit {'set' if self.channel_msg else 'unset'}")
        return decode_payload(cls, self.payload)


def encode_header(extension_type: int, msg_type: int, length: int) -> bytes:
    if not 0 <= length <= MAX_U24:
        raise Sv2CodecError(f"payload of {length} bytes does not fit the U24 length field")
    return extension_type.to_bytes(2, "little") + bytes([msg_type]) + length.to_bytes(3, "little")


def decode_header(header: bytes, max_payload: int = MAX_PAYLOAD) -> tuple[int, int, bool, int]:
    """(extension_type without the channel bit, msg_type, channel_msg, payload length); checks the limit."""
    if len(header) != HEADER_SIZE:
        raise Sv2CodecError(f"frame header must be {HEADER_SIZE} bytes, got {len(header)}")
    ext = int.from_bytes(header[0:2], "little")
    length = int.from_bytes(header[3:6], "little")
    if length > max_payload:
        raise Sv2CodecError(f"frame of {length} bytes exceeds the {max_payload}-byte limit")
    return ext & ~CHANNEL_MSG_BIT, header[2], bool(ext & CHANNEL_MSG_BIT), length


def frame_of(msg: Message) -> Frame:
    return Frame(msg.EXTENSION, msg.MSG_TYPE, msg.CHANNEL_MSG, encode_payload(msg))


def encode_message(msg: Message) -> bytes:
    return frame_of(msg).encode()


def decode_frame(data: bytes, max_payload: int = MAX_PAYLOAD) -> Frame:
    """One complete plaintext frame (header + exactly its payload)."""
    ext, msg_type, channel, length = decode_header(data[:HEADER_SIZE], max_payload)
    if len(data) - HEADER_SIZE != length:
        raise Sv2CodecError(f"frame says {length} payload bytes, has {len(data) - HEADER_SIZE}")
    return Frame(ext, msg_type, channel, data[HEADER_SIZE:])
