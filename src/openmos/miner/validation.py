"""Re-validation of hardware nonces, with the midstate of each (work, version) computed once."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from openmos.bitcoin import Midstate
from openmos.hw.work import WorkItem


class InvalidNonce(ValueError):
    """The hardware reported a nonce that does not hold up (a hardware error)."""


@dataclass
class WorkValidator:
    """Checks nonces reported for one work item. Chips report many nonces per work: the midstate of each
    rolled version is computed once and reused, so validation costs one midstate-resumed sha256d per nonce."""

    item: WorkItem
    _head_after_version: bytes = field(init=False, repr=False)
    _tail12: bytes = field(init=False, repr=False)
    _midstates: dict[int, Midstate] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        raw = self.item.header.serialize()
        self._head_after_version = raw[4:64]
        self._tail12 = raw[64:76]

    def digest(self, nonce: int, version: int) -> bytes:
        """sha256d of the header with this nonce and version; InvalidNonce if it misses the work target."""
        mid = self._midstates.get(version)
        if mid is None:
            mid = self._midstate(version)
        digest = mid.hash_tail(self._tail12 + nonce.to_bytes(4, "little"))
        if int.from_bytes(digest, "little") > self.item.target:
            raise InvalidNonce(f"nonce {nonce:08x} does not meet the work target")
        return digest

    def _midstate(self, version: int) -> Midstate:
        item = self.item
        if (version ^ item.header.version) & ~item.version_mask & 0xFFFFFFFF:
            raise InvalidNonce(f"version {version:08x} changes bits outside the mask {item.version_mask:08x}")
        if len(self._midstates) >= 64:
            self._midstates.clear()
        mid = self._midstates[version] = Midstate.of(struct.pack("<I", version) + self._head_after_version)
        return mid
