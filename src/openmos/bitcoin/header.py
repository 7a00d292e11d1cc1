"""The 80-byte block header and the Stratum encodings of its fields."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from openmos.bitcoin.hashing import Midstate, sha256d

_HEADER = struct.Struct("<I32s32sIII")


def swap_words(data: bytes) -> bytes:
    """Reverse the byte order inside each 4-byte word (Stratum's prevhash encoding)."""
    if len(data) % 4:
        raise ValueError("length must be a multiple of 4")
    return b"".join(data[i : i + 4][::-1] for i in range(0, len(data), 4))


@dataclass(frozen=True)
class BlockHeader:
    version: int
    prev_hash: bytes  # internal byte order
    merkle_root: bytes  # internal byte order
    ntime: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        return _HEADER.pack(self.version, self.prev_hash, self.merkle_root, self.ntime, self.bits, self.nonce)

    @classmethod
    def parse(cls, raw: bytes) -> BlockHeader:
        if len(raw) != 80:
            raise ValueError(f"a block header is 80 bytes, got {len(raw)}")
        version, prev, merkle, ntime, bits, nonce = _HEADER.unpack(raw)
        return cls(version, prev, merkle, ntime, bits, nonce)

    def hash(self) -> bytes:
        return sha256d(self.serialize())

    def hash_hex(self) -> str:
        """Hash as block explorers print it (byte-reversed)."""
        return self.hash()[::-1].hex()

    def with_nonce(self, nonce: int) -> BlockHeader:
        return replace(self, nonce=nonce)

    def midstate(self) -> Midstate:
        return Midstate.of(self.serialize()[:64])

    def tail12(self) -> bytes:
        """Bytes 64..76: merkle root tail, ntime, nbits -- everything after the midstate but the nonce."""
        return self.serialize()[64:76]
