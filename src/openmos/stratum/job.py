"""The Stratum V1 job model: what ``mining.notify`` carries and how it becomes a block header.

Encodings (the source of most Stratum bugs): ``prevhash`` is the header's prev-hash bytes with every
4-byte word byte-reversed; ``version``, ``nbits`` and ``ntime`` are big-endian hex of the integers;
merkle branch entries are raw hashes in internal order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openmos.bitcoin import BlockHeader, build_coinbase, merkle_root_from_branch, sha256d
from openmos.bitcoin.header import swap_words
from openmos.bitcoin.version import apply_version_bits
from openmos.stratum.protocol import ProtocolError, hex_field, u32_field

MAX_BRANCH = 32  # a block of 2^32 transactions is not coming


@dataclass(frozen=True)
class StratumJob:
    job_id: str
    prev_hash: bytes  # header byte order
    coinb1: bytes
    coinb2: bytes
    merkle_branch: tuple[bytes, ...]
    version: int
    nbits: int
    ntime: int
    clean_jobs: bool

    @classmethod
    def from_notify(cls, params: list[Any]) -> StratumJob:
        if len(params) < 9:
            raise ProtocolError(f"mining.notify needs 9 params, got {len(params)}")
        job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, clean = params[:9]
        if not isinstance(job_id, str) or not job_id or len(job_id) > 128:
            raise ProtocolError("mining.notify job_id must be a non-empty string of <= 128 chars")
        if not isinstance(branch, list) or len(branch) > MAX_BRANCH:
            raise ProtocolError(f"mining.notify merkle branch must be a list of <= {MAX_BRANCH} hashes")
        if not isinstance(clean, bool):
            raise ProtocolError("mining.notify clean_jobs must be true or false")
        return cls(
            job_id=job_id,
            prev_hash=swap_words(hex_field(prevhash, "prevhash", size=32)),
            coinb1=hex_field(coinb1, "coinb1"),
            coinb2=hex_field(coinb2, "coinb2"),
            merkle_branch=tuple(hex_field(h, "merkle branch entry", size=32) for h in branch),
            version=u32_field(version, "version"),
            nbits=u32_field(nbits, "nbits"),
            ntime=u32_field(ntime, "ntime"),
            clean_jobs=clean,
        )

    def to_notify_params(self) -> list[Any]:
        return [
            self.job_id,
            swap_words(self.prev_hash).hex(),
            self.coinb1.hex(),
            self.coinb2.hex(),
            [h.hex() for h in self.merkle_branch],
            f"{self.version:08x}",
            f"{self.nbits:08x}",
            f"{self.ntime:08x}",
            self.clean_jobs,
        ]

    def merkle_root(self, extranonce1: bytes, extranonce2: bytes) -> bytes:
        coinbase = build_coinbase(self.coinb1, extranonce1, extranonce2, self.coinb2)
        return merkle_root_from_branch(sha256d(coinbase), self.merkle_branch)

    def header(
        self, extranonce1: bytes, extranonce2: bytes, *, ntime: int, nonce: int, version: int
    ) -> BlockHeader:
        return BlockHeader(
            version, self.prev_hash, self.merkle_root(extranonce1, extranonce2), ntime, self.nbits, nonce
        )


@dataclass(frozen=True)
class Share:
    """A solved nonce ready for ``mining.submit`` (and enough to re-check it)."""

    job_id: str
    extranonce2: bytes
    ntime: int
    nonce: int
    version: int  # full rolled header version
    job_version: int
    version_mask: int
    difficulty: float = field(default=0.0, compare=False)  # achieved share difficulty, for stats
    pool_difficulty: float = field(default=0.0, compare=False)  # the pool difficulty it is credited at

    @property
    def version_bits(self) -> int:
        return self.version & self.version_mask

    def submit_params(self, user: str) -> list[Any]:
        params: list[Any] = [user, self.job_id, self.extranonce2.hex(), f"{self.ntime:08x}", f"{self.nonce:08x}"]
        if self.version_mask:
            params.append(f"{self.version_bits:08x}")
        return params

    def pool_version(self) -> int:
        return apply_version_bits(self.job_version, self.version_bits, self.version_mask)
