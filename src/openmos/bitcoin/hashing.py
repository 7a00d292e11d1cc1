"""Double SHA-256 and midstate reuse.

A block header is 80 bytes: the first 64 (version, prev hash, 28 bytes of merkle root) fill exactly one
SHA-256 block, so their compression state -- the *midstate* -- is shared by every nonce and ntime tried on
that header. hashlib exposes it as a hash object we can ``copy()``; that is what ASICs do in silicon.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

_sha256 = hashlib.sha256


def sha256d(data: bytes) -> bytes:
    """SHA-256 applied twice, raw digest in internal (little-endian) byte order."""
    return _sha256(_sha256(data).digest()).digest()


@dataclass(frozen=True)
class Midstate:
    """The SHA-256 state after the first 64 header bytes; hashes the 16-byte tail cheaply."""

    head: bytes
    _state: hashlib._Hash = field(repr=False, compare=False)

    @classmethod
    def of(cls, header_head: bytes) -> Midstate:
        if len(header_head) != 64:
            raise ValueError(f"midstate needs exactly 64 header bytes, got {len(header_head)}")
        return cls(header_head, _sha256(header_head))

    def hash_tail(self, tail: bytes) -> bytes:
        """sha256d(head + tail) for a 16-byte tail (merkle[28:32] | ntime | nbits | nonce)."""
        h = self._state.copy()
        h.update(tail)
        return _sha256(h.digest()).digest()

    def scan(self, tail12: bytes, nonces: range, target: int) -> Iterator[tuple[int, bytes]]:
        """Yield (nonce, hash) for every nonce whose sha256d meets ``target``.

        The hot loop of the CPU backend: it compares the top 32 bits first so the full 256-bit integer
        is only built for candidate hashes.
        """
        state = self._state
        top_limit = target >> 224
        from_bytes = int.from_bytes
        for nonce in nonces:
            h = state.copy()
            h.update(tail12 + nonce.to_bytes(4, "little"))
            digest = _sha256(h.digest()).digest()
            if from_bytes(digest[28:], "little") <= top_limit and from_bytes(digest, "little") <= target:
                yield nonce, digest
