"""SV2 data types (sv2-spec section 3.1): little-endian integers, length-prefixed bytes and sequences.

Each type is a ``Codec`` object with ``read`` and ``write``. Decoding never trusts a length: every read
is bounds-checked and a short, overlong or out-of-range field raises ``Sv2CodecError`` (a ``ValueError``)
naming the field, never ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Sv2CodecError(ValueError):
    """A field or frame does not follow the SV2 encoding rules."""


class Reader:
    """A cursor over one message payload."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise Sv2CodecError(f"{what}: needs {n} bytes, only {len(self.data) - self.pos} left")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def remaining(self) -> int:
        return len(self.data) - self.pos


class Codec(Generic[T]):
    """How one SV2 data type is read and written."""

    name = "?"
    max_size = 0  # the most bytes one value of this type takes on the wire

    def read(self, r: Reader) -> T:
        raise NotImplementedError

    def write(self, out: bytearray, value: T) -> None:
        raise NotImplementedError

    def check(self, value: Any) -> None:
        """Raise Sv2CodecError if ``value`` cannot be encoded (used before writing)."""
        self.write(bytearray(), value)


class UInt(Codec[int]):
    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.max_size = size
        self.name = name
        self.limit = 1 << (8 * size)

    def read(self, r: Reader) -> int:
        return int.from_bytes(r.take(self.size, self.name), "little")

    def write(self, out: bytearray, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.limit:
            raise Sv2CodecError(f"{self.name} must be an integer in 0..{self.limit - 1}, got {value!r}")
        out += value.to_bytes(self.size, "little")


class Bool(Codec[bool]):
    max_size = 1
    name = "BOOL"

    def read(self, r: Reader) -> bool:
        return bool(r.take(1, self.name)[0] & 1)  # only the least significant bit has meaning

    def write(self, out: bytearray, value: bool) -> None:
        if not isinstance(value, bool):
            raise Sv2CodecError(f"BOOL must be True or False, got {value!r}")
        out.append(1 if value else 0)


class F32(Codec[float]):
    max_size = 4
    """IEEE-754 binary32, little-endian. Any bit pattern decodes (NaN included); users check ranges."""

    name = "F32"

    def read(self, r: Reader) -> float:
        value: float = struct.unpack("<f", r.take(4, self.name))[0]
        return value

    def write(self, out: bytearray, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Sv2CodecError(f"F32 must be a number, got {value!r}")
        if math.isfinite(value) and abs(value) > 3.4028234663852886e38:
            raise Sv2CodecError(f"F32 out of range: {value!r}")
        out += struct.pack("<f", value)


class FixedBytes(Codec[bytes]):
    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.max_size = size
        self.name = name

    def read(self, r: Reader) -> bytes:
        return r.take(self.size, self.name)

    def write(self, out: bytearray, value: bytes) -> None:
        if not isinstance(value, bytes) or len(value) != self.size:
            raise Sv2CodecError(f"{self.name} must be exactly {self.size} bytes")
        out += value


class VarBytes(Codec[bytes]):
    """B0_32, B0_255, B0_64K, B0_16M: a little-endian length prefix and that many bytes."""

    def __init__(self, prefix: int, maximum: int, name: str) -> None:
        self.prefix = prefix
        self.maximum = maximum
        self.max_size = prefix + maximum
        self.name = name

    def read(self, r: Reader) -> bytes:
        n = int.from_bytes(r.take(self.prefix, f"{self.name} length"), "little")
        if n > self.maximum:
            raise Sv2CodecError(f"{self.name} length {n} exceeds {self.maximum}")
        return r.take(n, self.name)

    def write(self, out: bytearray, value: bytes) -> None:
        if not isinstance(value, bytes) or len(value) > self.maximum:
            raise Sv2CodecError(f"{self.name} must be bytes of length <= {self.maximum}")
        out += len(value).to_bytes(self.prefix, "little")
        out += value


class Str0_255(Codec[str]):
    """STR0_255: UTF-8 text of at most 255 bytes (the spec recommends UTF-8; we require it)."""

    name = "STR0_255"
    max_size = 1 + 255

    def read(self, r: Reader) -> str:
        raw = B0_255.read(r)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Sv2CodecError("STR0_255 is not valid UTF-8") from None

    def write(self, out: bytearray, value: str) -> None:
        if not isinstance(value, str):
            raise Sv2CodecError(f"STR0_255 must be a string, got {value!r}")
        raw = value.encode("utf-8")
        if len(raw) > 255:
            raise Sv2CodecError(f"STR0_255 is {len(raw)} bytes, more than 255")
        B0_255.write(out, raw)


class Seq(Codec[tuple[T, ...]]):
    """SEQ0_255[T], SEQ0_64K[T] and OPTION[T] (= SEQ0_1[T]); decoded as tuples."""

    def __init__(self, item: Codec[T], prefix: int, maximum: int, name: str) -> None:
        self.item = item
        self.prefix = prefix
        self.maximum = maximum
        self.max_size = prefix + maximum * item.max_size
        self.name = f"{name}[{item.name}]"

    def read(self, r: Reader) -> tuple[T, ...]:
        n = int.from_bytes(r.take(self.prefix, f"{self.name} length"), "little")
        if n > self.maximum:
            raise Sv2CodecError(f"{self.name} has {n} elements, at most {self.maximum} allowed")
        return tuple(self.item.read(r) for _ in range(n))

    def write(self, out: bytearray, value: tuple[T, ...]) -> None:
        if not isinstance(value, Sequence) or isinstance(value, str | bytes) or len(value) > self.maximum:
            raise Sv2CodecError(f"{self.name} must be a sequence of at most {self.maximum} elements")
        out += len(value).to_bytes(self.prefix, "little")
        for item in value:
            self.item.write(out, item)


class Option(Codec[T | None]):
    """OPTION[T]: SEQ0_1[T]; ``None`` when empty."""

    def __init__(self, item: Codec[T]) -> None:
        self.seq = Seq(item, 1, 1, "OPTION")
        self.name = self.seq.name
        self.max_size = self.seq.max_size

    def read(self, r: Reader) -> T | None:
        items = self.seq.read(r)
        return items[0] if items else None

    def write(self, out: bytearray, value: T | None) -> None:
        self.seq.write(out, () if value is None else (value,))


U8 = UInt(1, "U8")
U16 = UInt(2, "U16")
U24 = UInt(3, "U24")
U32 = UInt(4, "U32")
U64 = UInt(8, "U64")
U256 = FixedBytes(32, "U256")  # kept as its 32 raw little-endian bytes: hashes stay hashes
BOOL = Bool()
FLOAT32 = F32()
STR0_255 = Str0_255()
B0_32 = VarBytes(1, 32, "B0_32")
B0_255 = VarBytes(1, 255, "B0_255")
B0_64K = VarBytes(2, 0xFFFF, "B0_64K")
B0_16M = VarBytes(3, 0xFFFFFF, "B0_16M")
PUBKEY = FixedBytes(32, "PUBKEY")
SIGNATURE = FixedBytes(64, "SIGNATURE")


def SEQ0_255(item: Codec[T]) -> Seq[T]:
    return Seq(item, 1, 255, "SEQ0_255")


def SEQ0_64K(item: Codec[T]) -> Seq[T]:
    return Seq(item, 2, 0xFFFF, "SEQ0_64K")


def OPTION(item: Codec[T]) -> Option[T]:
    return Option(item)


def u256_to_int(value: bytes) -> int:
    """A U256 field (targets) as an integer."""
    return int.from_bytes(value, "little")


def int_to_u256(value: int) -> bytes:
    if not 0 <= value < 1 << 256:
        raise Sv2CodecError(f"U256 out of range: {value!r}")
    return value.to_bytes(32, "little")
