"""Bitcoin primitives: pure functions, no I/O.

Owns sha256d and midstates, block headers, compact targets and pool difficulty, coinbase and merkle
assembly, BIP320 version rolling. Imports nothing from the rest of ``openmos``.
"""

from openmos.bitcoin.hashing import Midstate, sha256d
from openmos.bitcoin.header import BlockHeader
from openmos.bitcoin.merkle import build_coinbase, merkle_branches, merkle_root, merkle_root_from_branch
from openmos.bitcoin.target import (
    DIFF1_TARGET,
    bits_to_target,
    difficulty_to_target,
    hash_difficulty,
    hash_meets_target,
    hash_to_int,
    target_to_bits,
    target_to_difficulty,
)
from openmos.bitcoin.version import BIP320_MASK, apply_version_bits, rolled_versions

__all__ = [
    "BIP320_MASK",
    "DIFF1_TARGET",
    "BlockHeader",
    "Midstate",
    "apply_version_bits",
    "bits_to_target",
    "build_coinbase",
    "difficulty_to_target",
    "hash_difficulty",
    "hash_meets_target",
    "hash_to_int",
    "merkle_branches",
    "merkle_root",
    "merkle_root_from_branch",
    "rolled_versions",
    "sha256d",
    "target_to_bits",
    "target_to_difficulty",
]
