"""A locally generated block chain to mine against (regtest-like: no network, no real coins).

Each template has a BIP34 coinbase (height in the scriptSig, room for extranonce1 + extranonce2) paying to
a configurable output script, plus a few synthetic transaction ids so the merkle branch is non-trivial.
The chain's target is set by the operator; when a share meets it the block is appended and mining moves on.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from openmos.bitcoin import BlockHeader, merkle_branches, target_to_bits
from openmos.bitcoin.target import bits_to_target, difficulty_to_target

# OP_TRUE: anyone-can-spend, fine for a chain that never leaves this machine.
DEFAULT_PAYOUT_SCRIPT = bytes([0x51])
COINBASE_TAG = b"/OpenMOS local pool/"


def _push_int(value: int) -> bytes:
    """Minimal CScript push of a non-negative integer (BIP34 height)."""
    if value == 0:
        return b"\x00"
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little")
    return bytes([len(raw)]) + raw


def _varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    return b"\xfe" + struct.pack("<I", n)


def split_coinbase(height: int, extranonce_size: int, payout_script: bytes, value: int) -> tuple[bytes, bytes]:
    """(coinb1, coinb2) of a coinbase whose scriptSig holds ``extranonce_size`` bytes between them."""
    height_push = _push_int(height)
    script_len = len(height_push) + extranonce_size + len(COINBASE_TAG)
    if script_len > 100:
        raise ValueError("coinbase scriptSig would exceed 100 bytes")
    coinb1 = (
        struct.pack("<I", 2)  # tx version
        + b"\x01"  # one input
        + b"\x00" * 32 + b"\xff\xff\xff\xff"  # null prevout
        + _varint(script_len)
        + height_push
    )
    coinb2 = (
        COINBASE_TAG
        + b"\xff\xff\xff\xff"  # sequence
        + b"\x01"  # one output
        + struct.pack("<q", value)
        + _varint(len(payout_script)) + payout_script
        + b"\x00\x00\x00\x00"  # lock time
    )
    return coinb1, coinb2


@dataclass(frozen=True)
class BlockTemplate:
    height: int
    prev_hash: bytes
    version: int
    bits: int
    ntime: int
    coinb1: bytes
    coinb2: bytes
    txids: tuple[bytes, ...]
    merkle_branch: tuple[bytes, ...]

    @property
    def target(self) -> int:
        return bits_to_target(self.bits)


@dataclass
class TemplateChain:
    """The local chain: a tip and a rule for the next template."""

    network_difficulty: float = 1.0
    extranonce_size: int = 8  # extranonce1 + extranonce2 bytes
    payout_script: bytes = DEFAULT_PAYOUT_SCRIPT
    tx_count: int = 3
    clock: Callable[[], float] = time.time
    height: int = 1
    tip: bytes = field(default=b"\x00" * 32)
    blocks: list[BlockHeader] = field(default_factory=list)
    _refresh: int = 0

    def __post_init__(self) -> None:
        self.bits = target_to_bits(difficulty_to_target(self.network_difficulty))

    def template(self) -> BlockTemplate:
        """A fresh template for the current tip (new synthetic transactions each call)."""
        self._refresh += 1
        txids = tuple(
            hashlib.sha256(b"openmos-tx" + self.tip + struct.pack("<II", self._refresh, i)).digest()
            for i in range(self.tx_count)
        )
        coinb1, coinb2 = split_coinbase(self.height, self.extranonce_size, self.payout_script, 312_500_000)
        return BlockTemplate(
            height=self.height,
            prev_hash=self.tip,
            version=0x20000000,
            bits=self.bits,
            ntime=int(self.clock()),
            coinb1=coinb1,
            coinb2=coinb2,
            txids=txids,
            merkle_branch=tuple(merkle_branches(txids)),
        )

    def submit_block(self, header: BlockHeader) -> bool:
        """Append a solved block if it extends the tip and meets the target."""
        if header.prev_hash != self.tip or int.from_bytes(header.hash(), "little") > bits_to_target(header.bits):
            return False
        self.blocks.append(header)
        self.tip = header.hash()
        self.height += 1
        return True
