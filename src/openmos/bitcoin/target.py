"""Targets, compact ``nBits`` and pool difficulty.

A hash meets a target when the hash, read as a little-endian 256-bit integer, is <= the target.
Pool difficulty 1 is the target ``0xFFFF << 208`` (the "pdiff" convention used by Stratum pools).
"""

from __future__ import annotations

from fractions import Fraction

DIFF1_TARGET = 0xFFFF << 208
MAX_TARGET = (1 << 256) - 1


def hash_to_int(digest: bytes) -> int:
    """A raw (internal byte order) hash as the integer compared against targets."""
    return int.from_bytes(digest, "little")


def hash_meets_target(digest: bytes, target: int) -> bool:
    return hash_to_int(digest) <= target


def hash_difficulty(digest: bytes) -> float:
    """The share difficulty a hash achieves (diff1 target / hash value)."""
    value = hash_to_int(digest)
    return DIFF1_TARGET / value if value else float("inf")


def difficulty_to_target(difficulty: float) -> int:
    """Pool difficulty -> target. Fractional difficulties (< 1) are allowed, as CPU miners need them."""
    if not difficulty > 0:
        raise ValueError(f"difficulty must be positive, got {difficulty!r}")
    # Fraction(float) is exact, so fractional and huge difficulties both round the same way.
    target = int(Fraction(DIFF1_TARGET) / Fraction(difficulty))
    return min(target, MAX_TARGET)


def target_to_difficulty(target: int) -> float:
    if target <= 0:
        raise ValueError("target must be positive")
    return DIFF1_TARGET / target


def bits_to_target(bits: int) -> int:
    """Decode compact nBits (exponent byte, 23-bit mantissa, sign bit) into a target."""
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if bits & 0x00800000:
        raise ValueError(f"negative compact target {bits:#010x}")
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))


def target_to_bits(target: int) -> int:
    """Encode a target as compact nBits (the inverse of :func:`bits_to_target`, truncating)."""
    if target <= 0:
        raise ValueError("target must be positive")
    size = (target.bit_length() + 7) // 8
    mantissa = target << 8 * (3 - size) if size <= 3 else target >> 8 * (size - 3)
    if mantissa & 0x00800000:  # would read as negative: shift into the next exponent
        mantissa >>= 8
        size += 1
    return (size << 24) | mantissa
