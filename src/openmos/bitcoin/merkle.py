"""Coinbase assembly and merkle trees.

All hashes here are raw digests in internal byte order (as they appear in a header), not the reversed hex
that block explorers print.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

from openmos.bitcoin.hashing import sha256d


def build_coinbase(coinb1: bytes, extranonce1: bytes, extranonce2: bytes, coinb2: bytes) -> bytes:
    """The coinbase transaction a Stratum job describes."""
    return coinb1 + extranonce1 + extranonce2 + coinb2


def merkle_root_from_branch(coinbase_hash: bytes, branch: Sequence[bytes]) -> bytes:
    """Fold a Stratum merkle branch onto the coinbase hash (the coinbase is always the left-most leaf)."""
    root = coinbase_hash
    for sibling in branch:
        root = sha256d(root + sibling)
    return root


def merkle_root(txids: Sequence[bytes]) -> bytes:
    """Merkle root of a full transaction list (odd levels duplicate their last hash)."""
    if not txids:
        raise ValueError("a block has at least one transaction")
    level = list(txids)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = _pair_hashes(level, 0)
    return level[0]


def _pair_hashes(level: Sequence[bytes | None], start: int) -> list[bytes]:
    """sha256d(left + right) of each pair of ``level[start:]`` (even length): the inner loop of every tree."""
    return [sha256(sha256(a + b).digest()).digest()  # type: ignore[operator]
            for a, b in zip(level[start::2], level[start + 1::2], strict=True)]


def merkle_branches(txids_without_coinbase: Sequence[bytes]) -> list[bytes]:
    """The Stratum merkle branch for a block whose coinbase is not yet known.

    Computes the siblings on the left-most path, as a pool does when it sends ``mining.notify``.
    """
    branch: list[bytes] = []
    level: list[bytes | None] = [None, *txids_without_coinbase]
    while len(level) > 1:
        branch.append(level[1] if level[1] is not None else b"")
        if len(level) % 2:
            level.append(level[-1])
        level = [None, *_pair_hashes(level, 2)]
    return branch
