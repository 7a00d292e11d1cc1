"""The contract between the agent and any hashing hardware."""

from __future__ import annotations

from dataclasses import dataclass

from openmos.bitcoin import BlockHeader


@dataclass(frozen=True)
class WorkItem:
    """A header to search. Hardware varies the nonce and may roll version bits inside ``version_mask``.

    ``target`` is the ticket target: hardware reports every nonce whose hash meets it. It can be easier
    than the pool's share target (to measure hashrate from nonce counts, as ASIC ticket masks do).
    """

    work_id: int
    generation: int  # bumped by the agent when outstanding work must be abandoned (new block, pool switch)
    header: BlockHeader  # nonce field ignored
    version_mask: int
    target: int


@dataclass(frozen=True)
class NonceResult:
    """A nonce the hardware claims meets the work's ticket target. The agent re-validates it."""

    work_id: int
    nonce: int
    version: int  # full header version used (rolled)
    board: int = 0
    chip: int = 0
