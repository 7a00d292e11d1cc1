"""Bitcoin transactions and blocks: CompactSize, (de)serialization with BIP144 witnesses, txid/wtxid,
BIP141 weight, the witness commitment and coinbase building.

Parsing never trusts a length: every read is bounds-checked against the remaining bytes and a count
larger than the bytes that could hold it is refused, so hostile data raises ``TxError`` (a ValueError)
without allocating more than the input. Pure functions and frozen dataclasses only.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from openmos.bitcoin.hashing import sha256d
from openmos.bitcoin.merkle import merkle_root

MAX_BLOCK_WEIGHT = 4_000_000
WITNESS_SCALE = 4
COMMITMENT_HEADER = bytes.fromhex("6a24aa21a9ed")  # OP_RETURN, push 36, BIP141 magic
WITNESS_RESERVED_VALUE = bytes(32)
NULL_PREVOUT = bytes(32) + b"\xff\xff\xff\xff"


class TxError(ValueError):
    """Bytes that are not a well-formed transaction, output list or block."""


def compact_size(n: int) -> bytes:
    if n < 0:
        raise TxError(f"CompactSize of a negative number {n}")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


class ByteReader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TxError(f"{what}: needs {n} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def end(self, what: str) -> None:
        """Nothing may follow ``what``: trailing bytes are an error."""
        if self.remaining():
            raise TxError(f"{self.remaining()} trailing bytes after {what}")

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value

    def i64(self, what: str) -> int:
        value: int = struct.unpack("<q", self.take(8, what))[0]
        return value

    def compact(self, what: str) -> int:
        first = self.take(1, what)[0]
        if first < 0xFD:
            return first
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        n = int.from_bytes(self.take(size, what), "little")
        if n < (0xFD if size == 2 else 1 << (8 * size // 2)):
            raise TxError(f"{what}: non-canonical CompactSize")
        return n

    def count(self, what: str, min_item_size: int) -> int:
        """A CompactSize element count, refused if the remaining bytes cannot hold that many items."""
        n = self.compact(what)
        if n * min_item_size > len(self.data) - self.pos:
            raise TxError(f"{what}: {n} items cannot fit in {len(self.data) - self.pos} bytes")
        return n

    def var_bytes(self, what: str) -> bytes:
        return self.take(self.compact(what), what)

    def remaining(self) -> int:
        return len(self.data) - self.pos


@dataclass(frozen=True)
class TxIn:
    prevout: bytes  # 32-byte txid (internal order) + 4-byte index
    script_sig: bytes
    sequence: int


@dataclass(frozen=True)
class TxOut:
    value: int  # satoshis
    script: bytes

    def serialize(self) -> bytes:
        return struct.pack("<q", self.value) + compact_size(len(self.script)) + self.script


@dataclass(frozen=True)
class Transaction:
    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    witnesses: tuple[tuple[bytes, ...], ...]  # one stack per input, or () when no witness at all
    locktime: int

    def serialize(self, *, witness: bool = True) -> bytes:
        with_wit = witness and any(self.witnesses)
        out = bytearray(struct.pack("<I", self.version & 0xFFFFFFFF))
        if with_wit:
            out += b"\x00\x01"
        out += compact_size(len(self.inputs))
        for i in self.inputs:
            out += i.prevout + compact_size(len(i.script_sig)) + i.script_sig + struct.pack("<I", i.sequence)
        out += serialize_outputs(self.outputs)
        if with_wit:
            for stack in self.witnesses:
                out += compact_size(len(stack))
                for item in stack:
                    out += compact_size(len(item)) + item
        out += struct.pack("<I", self.locktime)
        return bytes(out)

    def txid(self) -> bytes:
        return sha256d(self.serialize(witness=False))

    def wtxid(self) -> bytes:
        return sha256d(self.serialize())

    def weight(self) -> int:
        return weight_of(self.serialize(witness=False), self.serialize())

    @property
    def is_coinbase(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].prevout == NULL_PREVOUT


def weight_of(stripped: bytes, full: bytes) -> int:
    return len(stripped) * (WITNESS_SCALE - 1) + len(full)


def read_outputs(r: ByteReader, what: str = "outputs") -> tuple[TxOut, ...]:
    n = r.count(f"{what} count", 9)
    outs = []
    for k in range(n):
        value = r.i64(f"{what}[{k}] value")
        if not 0 <= value <= 21_000_000 * 100_000_000:
            raise TxError(f"{what}[{k}] value {value} out of range")
        outs.append(TxOut(value, r.var_bytes(f"{what}[{k}] script")))
    return tuple(outs)


def read_tx(r: ByteReader) -> Transaction:
    version = r.u32("version")
    has_witness = False
    if r.remaining() >= 2 and r.data[r.pos] == 0 and r.data[r.pos + 1] == 1:
        r.pos += 2
        has_witness = True
    n_in = r.count("input count", 41)
    if n_in == 0:
        raise TxError("a transaction needs at least one input")
    inputs = tuple(TxIn(r.take(36, "prevout"), r.var_bytes("scriptSig"), r.u32("sequence")) for _ in range(n_in))
    outputs = read_outputs(r)
    witnesses: tuple[tuple[bytes, ...], ...] = ()
    if has_witness:
        stacks = []
        for _ in range(n_in):
            items = r.count("witness stack size", 1)
            stacks.append(tuple(r.var_bytes("witness item") for _ in range(items)))
        witnesses = tuple(stacks)
        if not any(witnesses):
            raise TxError("witness flag set but every witness is empty")
    return Transaction(version, inputs, outputs, witnesses, r.u32("locktime"))


def parse_tx(data: bytes) -> Transaction:
    """Exactly one transaction, nothing after it."""
    r = ByteReader(data)
    tx = read_tx(r)
    r.end("the transaction")
    return tx


def serialize_outputs(outputs: Sequence[TxOut]) -> bytes:
    """A CompactSize-prefixed output array (the JD / SetCustomMiningJob ``coinbase_tx_outputs`` form)."""
    return compact_size(len(outputs)) + b"".join(o.serialize() for o in outputs)


def parse_outputs(data: bytes) -> tuple[TxOut, ...]:
    r = ByteReader(data)
    outs = read_outputs(r)
    r.end("the outputs")
    return outs


def witness_commitment(wtxids_without_coinbase: Sequence[bytes]) -> bytes:
    """The BIP141 commitment output script (coinbase wtxid counted as 32 zero bytes)."""
    root = merkle_root([bytes(32), *wtxids_without_coinbase])
    return COMMITMENT_HEADER + sha256d(root + WITNESS_RESERVED_VALUE)


def bip34_height_push(height: int) -> bytes:
    """Minimal CScript push of the block height (BIP34), as the first item of the coinbase scriptSig."""
    if height < 0:
        raise TxError("negative height")
    if height == 0:
        return b"\x00"
    if 1 <= height <= 16:
        return bytes([0x50 + height])
    raw = height.to_bytes((height.bit_length() + 8) // 8, "little")
    return bytes([len(raw)]) + raw


def bip34_height(script_sig: bytes) -> int | None:
    """The height a coinbase scriptSig commits to, or None if it does not start with a number push."""
    if not script_sig:
        return None
    op = script_sig[0]
    if op == 0:
        return 0
    if 0x51 <= op <= 0x60:
        return op - 0x50
    if 1 <= op <= 8 and len(script_sig) > op:
        return int.from_bytes(script_sig[1:1 + op], "little")
    return None


@dataclass(frozen=True)
class CoinbaseParts:
    """A coinbase split around its extranonce, both full (BIP141 fields kept) and stripped."""

    prefix: bytes  # full: version | marker+flag | input up to and including coinbase_prefix
    suffix: bytes  # full: sequence | outputs | witness | locktime
    stripped_prefix: bytes  # the same without marker/flag (Stratum coinb1 minus extranonce)
    stripped_suffix: bytes  # without the witness (Stratum coinb2)

    def full(self, extranonce: bytes) -> bytes:
        return self.prefix + extranonce + self.suffix

    def stripped(self, extranonce: bytes) -> bytes:
        return self.stripped_prefix + extranonce + self.stripped_suffix


def split_coinbase_tx(version: int, script_prefix: bytes, extranonce_size: int, sequence: int,
                      outputs: Sequence[TxOut], locktime: int, *, segwit: bool) -> CoinbaseParts:
    """A coinbase whose scriptSig is ``script_prefix`` followed by ``extranonce_size`` extranonce bytes."""
    script_len = len(script_prefix) + extranonce_size
    if not 2 <= script_len <= 100:
        raise TxError(f"coinbase scriptSig of {script_len} bytes (consensus: 2..100)")
    head = struct.pack("<I", version)
    body = b"\x01" + NULL_PREVOUT + compact_size(script_len) + script_prefix
    tail = struct.pack("<I", sequence) + serialize_outputs(outputs)
    lock = struct.pack("<I", locktime)
    witness = b"\x01\x20" + WITNESS_RESERVED_VALUE if segwit else b""
    marker = b"\x00\x01" if segwit else b""
    return CoinbaseParts(head + marker + body, tail + witness + lock, head + body, tail + lock)


def strip_witness(tx_bytes: bytes) -> bytes:
    return parse_tx(tx_bytes).serialize(witness=False)


def serialize_block(header: bytes, txs: Sequence[bytes]) -> bytes:
    return header + compact_size(len(txs)) + b"".join(txs)


@dataclass(frozen=True)
class Block:
    header: bytes
    txs: tuple[Transaction, ...]

    def txids(self) -> list[bytes]:
        return [tx.txid() for tx in self.txs]


def parse_block(data: bytes) -> Block:
    if len(data) < 81:
        raise TxError("a block is at least an 80-byte header and a transaction count")
    r = ByteReader(data, 80)
    n = r.count("transaction count", 60)
    if n == 0:
        raise TxError("a block needs a coinbase transaction")
    txs = tuple(read_tx(r) for _ in range(n))
    r.end("the block")
    return Block(data[:80], txs)


def tx_hash_hex(h: bytes) -> str:
    """A txid/wtxid/block hash as RPC prints it (byte-reversed hex)."""
    return h[::-1].hex()


def hex_hash(text: str, what: str = "hash") -> bytes:
    """An RPC hex hash back to internal byte order; TxError unless exactly 64 hex digits."""
    if not isinstance(text, str) or len(text) != 64:
        raise TxError(f"{what} must be 64 hex digits")
    try:
        return bytes.fromhex(text)[::-1]
    except ValueError:
        raise TxError(f"{what} is not hex") from None


def synthetic_tx(seed: bytes, n_outputs: int = 1, *, segwit: bool = True, script_size: int = 22) -> Transaction:
    """A well-formed (but unspendable, regtest-like) transaction derived from ``seed`` for test mempools."""
    h = hashlib.sha256(seed).digest()
    script = bytes([0x00, 0x14]) + h[:20] if script_size == 22 else h[:1] * script_size
    outs = tuple(TxOut(1000 + i, script) for i in range(n_outputs))
    wit = ((h, h[:1] * 33),) if segwit else ()
    return Transaction(2, (TxIn(h + b"\x00\x00\x00\x00", b"" if segwit else h[:8], 0xFFFFFFFD),), outs, wit, 0)
