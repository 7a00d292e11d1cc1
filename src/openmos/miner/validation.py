"""Re-validation of hardware nonces, with the midstate of each (work, version) computed once."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from openmos.hw.work import WorkItem

_sha256 = hashlib.sha256
_from_bytes = int.from_bytes


class InvalidNonce(ValueError):
    """The hardware reported a nonce that does not hold up (a hardware error)."""


@dataclass(slots=True)
class WorkValidator:
    """Checks nonces reported for one work item.

    Chips report many nonces per work item, so the SHA-256 state after the first 64 header bytes (the
    midstate, as in ``bitcoin.Midstate``) of each rolled version is computed once and resumed per nonce.
    This is the agent's per-nonce hot path, hence the inlined hashing and the 32-bit pre-check of the
    target (the full 256-bit comparison only runs when the top words tie).
    """

    item: WorkItem
    _head_after_version: bytes = field(init=False, repr=False)
    _tail12: bytes = field(init=False, repr=False)
    _target: int = field(init=False, repr=False)
    _target_top: int = field(init=False, repr=False)
    _midstates: dict[int, hashlib._Hash] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        raw = self.item.header.serialize()
        self._head_after_version = raw[4:64]
        self._tail12 = raw[64:76]
        self._target = self.item.target
        self._target_top = self.item.target >> 224

    def digest(self, nonce: int, version: int) -> bytes:
        """sha256d of the header with this nonce and version; InvalidNonce if it misses the work target."""
        state = self._midstates.get(version)
        if state is None:
            state = self._midstate(version)
        h = state.copy()
        h.update(self._tail12 + nonce.to_bytes(4, "little"))
        digest = _sha256(h.digest()).digest()
        top = _from_bytes(digest[28:], "little")
        if top > self._target_top or (top == self._target_top and _from_bytes(digest, "little") > self._target):
            raise InvalidNonce(f"nonce {nonce:08x} does not meet the work target")
        return digest

    def _midstate(self, version: int) -> hashlib._Hash:
        item = self.item
        if (version ^ item.header.version) & ~item.version_mask & 0xFFFFFFFF:
            raise InvalidNonce(f"version {version:08x} changes bits outside the mask {item.version_mask:08x}")
        if len(self._midstates) >= 64:
            self._midstates.clear()
        state = self._midstates[version] = _sha256(struct.pack("<I", version) + self._head_after_version)
        return state
