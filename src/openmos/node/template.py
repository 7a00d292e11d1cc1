"""A block template from ``getblocktemplate`` (BIP22/23/145 shape), the operator's template policy and the
mining work (coinbase split, merkle path, witness commitment) built from the chosen transactions.

Node replies are hostile input: ``NodeTemplate.from_rpc`` checks every field's type and range and that
each transaction's bytes hash to the txid/wtxid the node claims, and raises ``TemplateError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from openmos.bitcoin.hashing import sha256d
from openmos.bitcoin.merkle import merkle_branches
from openmos.bitcoin.tx import (
    MAX_BLOCK_WEIGHT,
    CoinbaseParts,
    Transaction,
    TxError,
    TxOut,
    bip34_height_push,
    hex_hash,
    parse_tx,
    split_coinbase_tx,
    witness_commitment,
)

MAX_TEMPLATE_TXS = 0xFFFF  # DeclareMiningJob.wtxid_list is a SEQ0_64K
MAX_MONEY = 21_000_000 * 100_000_000
# sv2-spec 7.1: header 320 + tx count 12 + coinbase fixed 236 + scriptSig 400 + output count 12
# + witness commitment 188 weight units, plus 4 WU per byte of pool/JDC outputs.
RESERVED_WEIGHT = 1168


class TemplateError(ValueError):
    """A template reply that is malformed, inconsistent or unusable."""


class TemplateTx(NamedTuple):
    """One template transaction (a named tuple: thousands are built per template, and fast)."""

    data: bytes
    txid: bytes  # internal byte order
    wtxid: bytes
    fee: int
    weight: int
    depends: tuple[int, ...]  # 0-based indices of earlier template transactions

    @property
    def vsize(self) -> int:
        return (self.weight + 3) // 4

    @property
    def fee_rate(self) -> float:
        """sat/vB."""
        return self.fee / self.vsize

    def tx(self) -> Transaction:
        return parse_tx(self.data)


def _int(d: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise TemplateError(f"getblocktemplate: {key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


@dataclass(frozen=True)
class NodeTemplate:
    height: int
    version: int
    prev_hash: bytes  # internal byte order
    bits: int
    curtime: int
    mintime: int
    coinbase_value: int  # subsidy + fees of every template transaction
    transactions: tuple[TemplateTx, ...]
    target: int
    weight_limit: int = MAX_BLOCK_WEIGHT
    longpollid: str | None = None

    @property
    def subsidy(self) -> int:
        return self.coinbase_value - sum(t.fee for t in self.transactions)

    @classmethod
    def from_rpc(cls, result: Any, *, verify: bool | str = True, cache: TxCache | None = None) -> NodeTemplate:
        """``verify``: True/"full" parses every transaction and recomputes txid, wtxid and weight; "hash"
        checks each wtxid is sha256d of the data (which also proves the txid of a transaction without
        witness) and takes the node's txid and weight for witness transactions; False trusts the node.
        ``cache``: transactions checked in an earlier template with the same bytes and claimed hashes are
        not checked again (and not re-decoded from hex)."""
        if not isinstance(result, dict):
            raise TemplateError("getblocktemplate: result is not an object")
        rules = result.get("rules", [])
        if not isinstance(rules, list) or not any(r in ("segwit", "!segwit") for r in rules):
            raise TemplateError("getblocktemplate: the node did not enable the segwit rule")
        raw_txs = result.get("transactions")
        if not isinstance(raw_txs, list) or len(raw_txs) > MAX_TEMPLATE_TXS:
            raise TemplateError(f"getblocktemplate: transactions must be a list of <= {MAX_TEMPLATE_TXS}")
        fresh: dict[str, _Checked] | None = {} if cache is not None else None
        txs = [_template_tx(i, entry, verify, cache, fresh) for i, entry in enumerate(raw_txs)]
        try:
            bits = int(str(result.get("bits")), 16)
            target = int(str(result.get("target")), 16)
            prev = hex_hash(str(result.get("previousblockhash")), "previousblockhash")
        except (ValueError, TypeError) as exc:
            raise TemplateError(f"getblocktemplate: {exc}") from None
        if not 0 <= bits <= 0xFFFFFFFF or not 0 < target < 1 << 256:
            raise TemplateError("getblocktemplate: bits/target out of range")
        lp = result.get("longpollid")
        template = cls(
            height=_int(result, "height", 0, 0x7FFFFFFF),
            version=_int(result, "version", 0, 0xFFFFFFFF),
            prev_hash=prev, bits=bits,
            curtime=_int(result, "curtime", 0, 0xFFFFFFFF),
            mintime=_int(result, "mintime", 0, 0xFFFFFFFF) if "mintime" in result else 0,
            coinbase_value=_int(result, "coinbasevalue", 0, MAX_MONEY),
            transactions=tuple(txs), target=target,
            weight_limit=_int(result, "weightlimit", 4000, MAX_BLOCK_WEIGHT) if "weightlimit" in result
            else MAX_BLOCK_WEIGHT,
            longpollid=lp if isinstance(lp, str) and len(lp) <= 256 else None,
        )
        if template.subsidy < 0:
            raise TemplateError("getblocktemplate: coinbasevalue is less than the transaction fees")
        if cache is not None and fresh is not None:
            cache.entries = fresh
        return template


class _Checked(NamedTuple):
    """A transaction already checked against the hashes the node claimed for it."""

    data: bytes
    txid_hex: str
    hash_hex: str
    txid: bytes
    wtxid: bytes
    weight: int | None  # computed by a full parse (None: only the hashes were checked)


class TxCache:
    """Transactions checked in earlier templates, keyed by their raw hex exactly as the node sent it: a new
    template re-hashes only the transactions it did not carry before (the cache keeps only the last
    template's entries, so it is bounded by one template's size)."""

    def __init__(self) -> None:
        self.entries: dict[str, _Checked] = {}
        self.hits = 0
        self.misses = 0


_NO_DEPS: list[int] = []


def _template_tx(i: int, entry: Any, verify: bool | str, cache: TxCache | None = None,
                 fresh: dict[str, _Checked] | None = None) -> TemplateTx:
    """One ``transactions[i]`` entry, checked (the hot loop of a template build: kept lean)."""
    try:
        raw, txid_hex = entry["data"], entry["txid"]
        hash_hex, fee = entry.get("hash", txid_hex), entry["fee"]
        node_weight, deps = entry.get("weight"), entry.get("depends", _NO_DEPS)
    except (KeyError, TypeError, AttributeError) as exc:
        raise TemplateError(f"getblocktemplate: transactions[{i}] is not an object with data, txid and fee "
                            f"({type(exc).__name__}: {exc})") from None
    if type(fee) is not int or not 0 <= fee <= MAX_MONEY:
        raise TemplateError(f"getblocktemplate: transactions[{i}].fee must be an integer in 0..{MAX_MONEY}")
    if type(deps) is not list:
        raise TemplateError(f"getblocktemplate: transactions[{i}].depends must be a list")
    depends: tuple[int, ...] = ()
    if deps:
        if not all(type(d) is int and 1 <= d <= i for d in deps):
            raise TemplateError(f"getblocktemplate: transactions[{i}].depends must index earlier transactions")
        depends = tuple(d - 1 for d in deps)
    if node_weight is not None and (type(node_weight) is not int or not 240 <= node_weight <= MAX_BLOCK_WEIGHT):
        raise TemplateError(f"getblocktemplate: transactions[{i}].weight must be an integer in "
                            f"240..{MAX_BLOCK_WEIGHT}")
    if cache is not None and type(raw) is str:
        hit = cache.entries.get(raw)
        if (hit is not None and hit.txid_hex == txid_hex and hit.hash_hex == hash_hex
                and (verify == "hash" or not verify or hit.weight is not None)):
            cache.hits += 1
            if fresh is not None:
                fresh[raw] = hit
            weight = hit.weight if hit.weight is not None else node_weight or 4 * len(hit.data)
            return TemplateTx(hit.data, hit.txid, hit.wtxid, fee, weight, depends)
        cache.misses += 1
    try:
        data = bytes.fromhex(raw)
        txid = hex_hash(txid_hex, "txid")
        wtxid = hex_hash(hash_hex, "hash")
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"getblocktemplate: transactions[{i}]: {exc}") from None
    weight = node_weight or 4 * len(data)
    full_weight: int | None = None
    if verify == "hash":  # (txid == wtxid without witness: the one hash proves both)
        if sha256d(data) != wtxid:
            raise TemplateError(f"getblocktemplate: transactions[{i}] data does not hash to its hash")
    elif verify:
        try:
            tx = parse_tx(data)
        except TxError as exc:
            raise TemplateError(f"getblocktemplate: transactions[{i}].data: {exc}") from None
        if tx.txid() != txid or tx.wtxid() != wtxid:
            raise TemplateError(f"getblocktemplate: transactions[{i}] data does not hash to its txid/hash")
        weight = full_weight = tx.weight()
    if verify and fresh is not None:
        fresh[raw] = _Checked(data, txid_hex, hash_hex, txid, wtxid, full_weight)
    return TemplateTx(data, txid, wtxid, fee, weight, depends)


@dataclass(frozen=True)
class TemplatePolicy:
    """What the operator lets into their blocks."""

    min_fee_rate: float = 0.0  # sat/vB
    excluded_txids: frozenset[bytes] = frozenset()  # internal byte order
    excluded_scripts: frozenset[bytes] = frozenset()  # output scripts never to pay
    max_weight: int = MAX_BLOCK_WEIGHT

    def __post_init__(self) -> None:
        if not math.isfinite(self.min_fee_rate) or self.min_fee_rate < 0:
            raise ValueError(f"min_fee_rate must be a finite number >= 0, got {self.min_fee_rate!r}")
        if not RESERVED_WEIGHT < self.max_weight <= MAX_BLOCK_WEIGHT:
            raise ValueError(f"max_weight must be in {RESERVED_WEIGHT + 1}..{MAX_BLOCK_WEIGHT}")

    @classmethod
    def from_strings(cls, min_fee_rate: float = 0.0, excluded_txids: Iterable[str] = (),
                     excluded_scripts: Iterable[str] = (), max_weight: int = MAX_BLOCK_WEIGHT) -> TemplatePolicy:
        return cls(min_fee_rate, frozenset(hex_hash(t, "excluded txid") for t in excluded_txids),
                   frozenset(bytes.fromhex(s) for s in excluded_scripts), max_weight)


@dataclass(frozen=True)
class Selection:
    txs: tuple[TemplateTx, ...]
    fees: int
    weight: int  # of the selected transactions
    excluded: int


def select_transactions(template: NodeTemplate, policy: TemplatePolicy, extra_coinbase_bytes: int = 0
                        ) -> Selection:
    """Template transactions the policy allows, in template order, parents before children; a transaction
    whose parent is left out is left out too. Weight budget: the policy's and the node's limit minus the
    sv2-spec coinbase reservation."""
    budget = min(policy.max_weight, template.weight_limit) - RESERVED_WEIGHT - 4 * extra_coinbase_bytes
    chosen: list[TemplateTx] = []
    included: set[int] = set()
    weight = fees = excluded = 0
    check_scripts = bool(policy.excluded_scripts)
    for i, t in enumerate(template.transactions):
        ok = (t.txid not in policy.excluded_txids and t.fee_rate >= policy.min_fee_rate
              and all(d in included for d in t.depends) and weight + t.weight <= budget)
        if ok and check_scripts:
            ok = not any(o.script in policy.excluded_scripts for o in t.tx().outputs)
        if not ok:
            excluded += 1
            continue
        included.add(i)
        chosen.append(t)
        weight += t.weight
        fees += t.fee
    return Selection(tuple(chosen), fees, weight, excluded)


@dataclass(frozen=True)
class Work:
    """Everything a job needs from one template: the coinbase split, the merkle path and who gets paid."""

    template: NodeTemplate
    selection: Selection
    coinbase: CoinbaseParts
    script_prefix: bytes  # BIP34 height push + tag (<= 8 bytes: SetCustomMiningJob.coinbase_prefix)
    outputs: tuple[TxOut, ...]
    merkle_path: tuple[bytes, ...]
    value: int
    sequence: int = 0xFFFFFFFF
    locktime: int = 0
    tx_version: int = 2
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def txids(self) -> tuple[bytes, ...]:
        return tuple(t.txid for t in self.selection.txs)

    @property
    def wtxids(self) -> tuple[bytes, ...]:
        return tuple(t.wtxid for t in self.selection.txs)


def build_work(template: NodeTemplate, selection: Selection, pool_outputs: Sequence[TxOut], extranonce_size: int,
               tag: bytes = b"", extra_outputs: Sequence[TxOut] = ()) -> Work:
    """The coinbase pays ``subsidy + selected fees`` (minus ``extra_outputs``) to the first pool output (the
    pool payout output, sv2-spec 6.4.3), keeps the pool's other outputs, and ends with the witness commitment.
    ``tag`` follows the BIP34 height in the scriptSig, cut to keep that prefix within 8 bytes."""
    if not pool_outputs:
        raise TemplateError("the pool gave no payout output")
    height_push = bip34_height_push(template.height)
    script_prefix = height_push + tag[:max(0, 8 - len(height_push))]  # coinbase_prefix: <= 8 bytes (sv2-spec)
    value = template.subsidy + selection.fees
    payout = value - sum(o.value for o in extra_outputs)
    if payout <= 0:
        raise TemplateError("extra outputs leave nothing for the pool payout output")
    outputs = (TxOut(payout, pool_outputs[0].script), *pool_outputs[1:], *extra_outputs,
               TxOut(0, witness_commitment([t.wtxid for t in selection.txs])))
    parts = split_coinbase_tx(2, script_prefix, extranonce_size, 0xFFFFFFFF, outputs, 0, segwit=True)
    txids = [t.txid for t in selection.txs]
    return Work(template, selection, parts, script_prefix, outputs, tuple(merkle_branches(txids)), value)
