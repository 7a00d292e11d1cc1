"""BIP320 / BIP310 version rolling.

Miners may change the header version bits inside a mask agreed with the pool (BIP310
``mining.configure``); BIP320 reserves bits 13-28 (mask ``0x1fffe000``) for this.
"""

from __future__ import annotations

from collections.abc import Iterator

BIP320_MASK = 0x1FFFE000


def apply_version_bits(job_version: int, version_bits: int, mask: int) -> int:
    """The header version a pool computes from a submit: (job & ~mask) | (bits & mask)."""
    return (job_version & ~mask & 0xFFFFFFFF) | (version_bits & mask)


def rolled_versions(job_version: int, mask: int) -> Iterator[int]:
    """Every header version reachable by rolling the bits of ``mask``, starting at the job's own."""
    if mask == 0:
        yield job_version
        return
    positions = [bit for bit in range(32) if mask >> bit & 1]
    base = job_version & ~mask & 0xFFFFFFFF
    start = 0
    # Count upward over the free bits, beginning from the job's current setting of them.
    for i, bit in enumerate(positions):
        if job_version >> bit & 1:
            start |= 1 << i
    count = 1 << len(positions)
    for k in range(count):
        n = (start + k) % count
        value = base
        for i, bit in enumerate(positions):
            if n >> i & 1:
                value |= 1 << bit
        yield value


def version_for_index(job_version: int, mask: int, index: int) -> int:
    """The ``index``-th rolled version (cheap random access used to hand each worker its own midstate)."""
    positions = [bit for bit in range(32) if mask >> bit & 1]
    if not positions:
        if index:
            raise ValueError("version rolling is not allowed (empty mask)")
        return job_version
    index %= 1 << len(positions)
    value = job_version & ~mask & 0xFFFFFFFF
    for i, bit in enumerate(positions):
        if index >> i & 1:
            value |= 1 << bit
    return value
