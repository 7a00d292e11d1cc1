"""The local pool's Job Declarator Server (sv2-spec 6.1, Full-Template mode) and custom-job checks.

``JobDeclarator`` is the logic (no I/O): it allocates ``mining_job_token``s with the pool's required
coinbase outputs, validates each ``DeclareMiningJob`` (token, BIP34 height of the next block, the pool
payout output funded, every wtxid known to the pool's mempool or supplied through
``ProvideMissingTransactions``, supplied transactions hashing to their wtxid, the witness commitment,
block weight, coinbase value <= subsidy + the fees the pool can prove) and keeps the accepted jobs so the
Mining Protocol side (``SetCustomMiningJob`` on an extended channel) can check a custom job against what was
declared, and so a ``PushSolution`` -- or a block found through shares -- becomes a full block on the chain
with the miner-chosen transactions. ``JdsServer`` is its encrypted (Noise NX) network front end.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from openmos.base.logs import LogLimiter
from openmos.bitcoin import BlockHeader, merkle_root_from_branch, sha256d
from openmos.bitcoin.merkle import merkle_branches
from openmos.bitcoin.tx import (
    COMMITMENT_HEADER,
    MAX_BLOCK_WEIGHT,
    ByteReader,
    Transaction,
    TxError,
    TxOut,
    bip34_height,
    compact_size,
    parse_tx,
    serialize_block,
    serialize_outputs,
    witness_commitment,
)
from openmos.node.template import TemplateTx
from openmos.pool.chain import BlockTemplate
from openmos.pool.node_rpc import SUBSIDY, PoolNode
from openmos.pool.sv2_listener import ServedConnection, Sv2Listener
from openmos.pool.v1_session import PEER_LOG_BURST
from openmos.stratum.v2.job_declaration import (
    AllocateMiningJobToken,
    AllocateMiningJobTokenSuccess,
    DeclareMiningJob,
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    ProvideMissingTransactions,
    ProvideMissingTransactionsSuccess,
    PushSolution,
)
from openmos.stratum.v2.messages import (
    PROTOCOL_JOB_DECLARATION,
    Message,
    SetCustomMiningJob,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    largest_payload,
)
from openmos.stratum.v2.transport import Sv2Connection

log = logging.getLogger(__name__)

MAX_TOKENS = 4096  # outstanding tokens kept (oldest forgotten first)
MAX_JOBS = 256  # declared jobs kept for SetCustomMiningJob / PushSolution
JD_MAX_PAYLOAD = 16 << 20  # ProvideMissingTransactions.Success can carry a whole block's transactions
# What a set-up client may send unasked (~2.2 MB: a DeclareMiningJob listing 65,535 wtxids); the whole
# JD_MAX_PAYLOAD only while this server waits for the transactions it asked for.
JD_REQUEST_MAX_PAYLOAD = largest_payload(AllocateMiningJobToken, DeclareMiningJob, PushSolution)
HEADER_AND_COUNT_WEIGHT = 320 + 12
MAX_SUPPLIED_MEMPOOL = 100_000  # supplied transactions join the pool's mempool only below this size


class DeclarationRejected(Exception):
    def __init__(self, code: str, details: str = "") -> None:
        super().__init__(f"{code}: {details}" if details else code)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class DeclaredJob:
    token: bytes  # DeclareMiningJob.Success.new_mining_job_token
    user: str
    version: int
    coinbase_prefix: bytes  # full (BIP141 fields kept), up to the extranonce
    coinbase_suffix: bytes
    extranonce_size: int  # bytes of scriptSig after the declared script prefix
    coinbase: Transaction  # parsed with a zero extranonce
    script_prefix: bytes  # scriptSig bytes before the extranonce (SetCustomMiningJob.coinbase_prefix)
    outputs_serialized: bytes  # CompactSize-prefixed (SetCustomMiningJob.coinbase_tx_outputs)
    txs: tuple[bytes, ...]
    txids: tuple[bytes, ...]
    merkle_path: tuple[bytes, ...]
    height: int
    fees: int  # the fees the pool could prove (mempool entries; supplied transactions whose inputs it knows)
    unverified: int = 0  # supplied transactions credited no fee: their inputs are unknown to the pool
    declared_at: float = 0.0


@dataclass
class _Pending:
    msg: DeclareMiningJob
    user: str
    txs: list[bytes | None]
    missing: list[int]


@dataclass
class JobDeclarator:
    node: PoolNode
    payout_script: bytes
    extra_outputs: tuple[TxOut, ...] = ()  # more 0-value outputs the pool imposes (sv2-spec 6.4.3)
    tokens: OrderedDict[bytes, str] = field(default_factory=OrderedDict)  # allocated, not yet declared
    jobs: OrderedDict[bytes, DeclaredJob] = field(default_factory=OrderedDict)
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    # A line per declaration, accepted or refused: clients declare at will, so the lines are rate-limited.
    peer_log: LogLimiter = field(default_factory=lambda: LogLimiter(log, burst=PEER_LOG_BURST))

    @property
    def pool_outputs(self) -> tuple[TxOut, ...]:
        return (TxOut(0, self.payout_script), *self.extra_outputs)

    def allocate(self, msg: AllocateMiningJobToken) -> AllocateMiningJobTokenSuccess:
        token = os.urandom(16)
        self.tokens[token] = msg.user_identifier
        while len(self.tokens) > MAX_TOKENS:
            self.tokens.popitem(last=False)
        return AllocateMiningJobTokenSuccess(msg.request_id, token, serialize_outputs(self.pool_outputs))

    # -- declaration ------------------------------------------------------------------------------

    def declare(self, msg: DeclareMiningJob) -> tuple[Message, _Pending | None]:
        """DeclareMiningJob.Success/.Error, or ProvideMissingTransactions with the pending state."""
        try:
            user = self.tokens.pop(msg.mining_job_token, None)
            if user is None:
                raise DeclarationRejected("invalid-mining-job-token", "unknown, expired or already used token")
            known = self.node.mempool.by_wtxid()
            txs: list[bytes | None] = [(t.data if (t := known.get(w)) is not None else None) for w in msg.wtxid_list]
            missing = [i for i, data in enumerate(txs) if data is None]
            pending = _Pending(msg, user, txs, missing)
            if missing:
                return ProvideMissingTransactions(msg.request_id, tuple(missing)), pending
            return self._finish(pending), None
        except DeclarationRejected as exc:
            return self._reject(msg.request_id, exc), None

    def provide(self, pending: _Pending, msg: ProvideMissingTransactionsSuccess) -> Message:
        try:
            if len(msg.transaction_list) != len(pending.missing):
                raise DeclarationRejected("invalid-missing-transactions",
                                          f"asked for {len(pending.missing)}, got {len(msg.transaction_list)}")
            for pos, data in zip(pending.missing, msg.transaction_list, strict=True):
                pending.txs[pos] = data
            return self._finish(pending)
        except DeclarationRejected as exc:
            return self._reject(pending.msg.request_id, exc)

    def _reject(self, request_id: int, exc: DeclarationRejected) -> DeclareMiningJobError:
        self.rejected[exc.code] = self.rejected.get(exc.code, 0) + 1
        self.peer_log.log(logging.INFO, "refused", "jds: declared job refused: %s", exc)
        return DeclareMiningJobError(request_id, exc.code, exc.details.encode()[:0xFFFF])

    def _finish(self, p: _Pending) -> DeclareMiningJobSuccess:
        msg = p.msg
        en_size, script_prefix = _coinbase_layout(msg.coinbase_tx_prefix)
        try:
            coinbase = parse_tx(msg.coinbase_tx_prefix + bytes(en_size) + msg.coinbase_tx_suffix)
        except TxError as exc:
            raise DeclarationRejected("invalid-coinbase", str(exc)) from None
        if not coinbase.is_coinbase:
            raise DeclarationRejected("invalid-coinbase", "not a coinbase (one null-prevout input)")
        height = bip34_height(coinbase.inputs[0].script_sig)
        if height != self.node.chain.height:
            raise DeclarationRejected("invalid-coinbase-height",
                                      f"coinbase commits to height {height}, next block is {self.node.chain.height}")
        payout = [o for o in coinbase.outputs if o.script == self.payout_script]
        if not payout or sum(o.value for o in payout) <= 0:
            raise DeclarationRejected("missing-pool-payout", "the coinbase does not fund the pool payout output")
        for extra in self.extra_outputs:
            if extra not in coinbase.outputs:
                raise DeclarationRejected("missing-pool-output", f"required output {extra.script.hex()} absent")
        known = self.node.mempool.by_wtxid()
        txids: list[bytes] = []
        weight = HEADER_AND_COUNT_WEIGHT + coinbase.weight()
        fees = unverified = 0
        witness = False
        funds = _Funds(self.node.mempool.txs)
        supplied: list[TemplateTx] = []
        for i, (data, wtxid) in enumerate(zip(p.txs, msg.wtxid_list, strict=True)):
            assert data is not None
            entry = known.get(wtxid)
            if entry is not None and entry.data == data:  # checked when it entered our mempool
                txids.append(entry.txid)
                weight += entry.weight
                witness = witness or entry.txid != entry.wtxid
                fees += entry.fee
                funds.declared[entry.txid] = entry.data
                continue
            try:
                tx = parse_tx(data)
            except TxError as exc:
                raise DeclarationRejected("invalid-transaction", f"transaction {i}: {exc}") from None
            if tx.wtxid() != wtxid:
                raise DeclarationRejected("invalid-transaction", f"transaction {i} does not hash to its wtxid")
            if tx.is_coinbase:
                raise DeclarationRejected("invalid-transaction", f"transaction {i} is a second coinbase")
            fee = funds.fee(i, tx)  # None: spends outputs the pool does not know, so its fee is unknowable
            if fee is None:
                unverified += 1
            fees += fee or 0
            txids.append(tx.txid())
            funds.declared[txids[-1]] = data
            weight += tx.weight()
            witness = witness or bool(tx.witnesses)
            supplied.append(TemplateTx(data, txids[-1], wtxid, fee or 0, tx.weight(), ()))
        if len(set(txids)) != len(txids):
            raise DeclarationRejected("invalid-transaction", "a transaction appears twice")
        if weight > MAX_BLOCK_WEIGHT:
            raise DeclarationRejected("block-too-heavy", f"{weight} weight units > {MAX_BLOCK_WEIGHT}")
        value = sum(o.value for o in coinbase.outputs)
        if value > SUBSIDY + fees:
            why = (f"; {unverified} supplied transaction(s) spend outputs unknown to the pool's node, so their "
                   f"fees cannot be verified and are credited 0" if unverified else "")
            raise DeclarationRejected("invalid-coinbase-value",
                                      f"pays {value} sat, subsidy + verifiable fees = {SUBSIDY + fees}{why}")
        if witness:
            commitments = [o.script for o in coinbase.outputs if o.script.startswith(COMMITMENT_HEADER)]
            if not commitments or commitments[-1] != witness_commitment(list(msg.wtxid_list)):
                raise DeclarationRejected("invalid-witness-commitment", "missing or wrong BIP141 commitment")
        for t in supplied:  # only once the job is accepted; a flood of supplied txs cannot grow the mempool
            if len(self.node.mempool.txs) < MAX_SUPPLIED_MEMPOOL:
                self.node.mempool.add(t)
        token = os.urandom(16)
        job = DeclaredJob(token, p.user, msg.version, msg.coinbase_tx_prefix, msg.coinbase_tx_suffix, en_size,
                          coinbase, script_prefix, serialize_outputs(coinbase.outputs),
                          tuple(d for d in p.txs if d is not None), tuple(txids), tuple(merkle_branches(txids)),
                          height, fees, unverified, time.time())
        self.jobs[token] = job
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)
        self.accepted += 1
        self.peer_log.log(logging.INFO, "accepted", "jds: accepted a job declared by %s: height %d, %d transactions, "
                          "%d sat verifiable fees%s", p.user, height, len(txids), fees,
                          f" ({unverified} supplied without one)" if unverified else "")
        return DeclareMiningJobSuccess(msg.request_id, token)

    # -- the Mining Protocol side -----------------------------------------------------------------

    def custom_template(self, msg: SetCustomMiningJob, extranonce1: bytes, extranonce_size: int) -> BlockTemplate:
        """The pool job for a SetCustomMiningJob, or DeclarationRejected (its error_code says why)."""
        job = self.jobs.get(msg.mining_job_token)
        if job is None:
            raise DeclarationRejected("invalid-mining-job-token", "no declared job has this token")
        chain = self.node.chain
        if msg.prev_hash != chain.tip:
            raise DeclarationRejected("invalid-prev-hash", "does not build on the pool's best block")
        if msg.nbits != chain.bits:
            raise DeclarationRejected("invalid-nbits")
        if msg.min_ntime > time.time() + 7200:
            raise DeclarationRejected("invalid-min-ntime")
        cb = job.coinbase
        if (msg.coinbase_prefix != job.script_prefix or msg.coinbase_tx_outputs != job.outputs_serialized
                or msg.coinbase_tx_version != cb.version or msg.coinbase_tx_locktime != cb.locktime
                or msg.coinbase_tx_input_nsequence != cb.inputs[0].sequence):
            raise DeclarationRejected("invalid-coinbase", "coinbase differs from the declared job")
        if msg.merkle_path != job.merkle_path:
            raise DeclarationRejected("invalid-merkle-path", "transactions differ from the declared job")
        if len(extranonce1) + extranonce_size != job.extranonce_size:
            raise DeclarationRejected("invalid-extranonce-size",
                                      f"declared {job.extranonce_size} extranonce bytes, the channel has "
                                      f"{len(extranonce1) + extranonce_size}")
        script_len = len(job.script_prefix) + job.extranonce_size
        coinb1 = (struct.pack("<I", cb.version) + b"\x01" + bytes(32) + b"\xff\xff\xff\xff"
                  + compact_size(script_len) + job.script_prefix)
        coinb2 = struct.pack("<I", cb.inputs[0].sequence) + job.outputs_serialized + struct.pack("<I", cb.locktime)
        return BlockTemplate(job.height, msg.prev_hash, msg.version, msg.nbits, msg.min_ntime, coinb1, coinb2,
                             job.txids, job.merkle_path)

    def full_block(self, job: DeclaredJob, header: BlockHeader, extranonce: bytes) -> bytes:
        coinbase = job.coinbase_prefix + extranonce + job.coinbase_suffix
        return serialize_block(header.serialize(), [coinbase, *job.txs])

    def record_block(self, job: DeclaredJob, header: BlockHeader, extranonce: bytes) -> None:
        """A block the pool's chain accepted from shares on a custom job: keep it whole (miner's tx set)."""
        raw = self.full_block(job, header, extranonce)
        h = header.hash()
        self.node.blocks[h] = raw
        self.node.block_txids[h] = (parse_tx(job.coinbase_prefix + extranonce + job.coinbase_suffix).txid(),
                                    *job.txids)
        self.node.heights[h] = job.height
        self.node.mempool.remove(list(job.txids))
        self.node.refill_mempool()
        self.node.sync_tip()

    def push_solution(self, job: DeclaredJob, msg: PushSolution) -> str | None:
        """Rebuild the block of the connection's last declared job and submit it to the chain."""
        if len(msg.extranonce) != job.extranonce_size:
            return "bad-extranonce-size"
        coinbase = job.coinbase_prefix + msg.extranonce + job.coinbase_suffix
        try:
            stripped = parse_tx(coinbase).serialize(witness=False)
        except TxError:
            return "bad-coinbase"
        root = merkle_root_from_branch(sha256d(stripped), job.merkle_path)
        header = BlockHeader(msg.version, msg.prev_hash, root, msg.ntime, msg.nbits, msg.nonce)
        return self.node.submit(serialize_block(header.serialize(), [coinbase, *job.txs]))


class _Funds:
    """What a JDS can know of a supplied transaction's fee: the values of the outputs it spends, when they
    are outputs of the pool's mempool or of earlier transactions in the same declared job (a node without
    the UTXO set can verify no more). Each source transaction is parsed at most once per declaration."""

    def __init__(self, mempool: Mapping[bytes, TemplateTx]) -> None:
        self.mempool = mempool
        self.declared: dict[bytes, bytes] = {}  # txid -> data of the job's transactions so far
        self._outputs: dict[bytes, tuple[TxOut, ...]] = {}

    def fee(self, i: int, tx: Transaction) -> int | None:
        total = 0
        for txin in tx.inputs:
            src, index = txin.prevout[:32], int.from_bytes(txin.prevout[32:], "little")
            outputs = self._outputs.get(src)
            if outputs is None:
                entry = self.mempool.get(src)
                data = self.declared.get(src) if entry is None else entry.data
                if data is None:
                    return None
                outputs = self._outputs[src] = parse_tx(data).outputs
            if index >= len(outputs):
                raise DeclarationRejected("invalid-transaction", f"transaction {i} spends output {index} of a "
                                          f"transaction that has {len(outputs)}")
            total += outputs[index].value
        fee = total - sum(o.value for o in tx.outputs)
        if fee < 0:
            raise DeclarationRejected("invalid-transaction", f"transaction {i} spends {total} sat and pays "
                                      f"{total - fee} sat")
        return fee


def _coinbase_layout(prefix: bytes) -> tuple[int, bytes]:
    """(extranonce size, script bytes before it) from a declared coinbase prefix: the extranonce is taken to
    fill the scriptSig after the prefix's script bytes (as SetCustomMiningJob.coinbase_prefix requires)."""
    try:
        r = ByteReader(prefix)
        r.take(4, "version")
        if prefix[4:6] == b"\x00\x01":
            r.take(2, "marker")
        if r.compact("input count") != 1:
            raise DeclarationRejected("invalid-coinbase", "a coinbase has exactly one input")
        if r.take(36, "prevout") != bytes(32) + b"\xff\xff\xff\xff":
            raise DeclarationRejected("invalid-coinbase", "the coinbase input must spend the null prevout")
        script_len = r.compact("scriptSig length")
    except TxError as exc:
        raise DeclarationRejected("invalid-coinbase", str(exc)) from None
    script_prefix = prefix[r.pos:]
    if not 2 <= script_len <= 100 or len(script_prefix) > script_len or len(script_prefix) > 8:
        raise DeclarationRejected("invalid-coinbase", "scriptSig must be 2..100 bytes with a prefix of <= 8")
    return script_len - len(script_prefix), script_prefix


@dataclass(eq=False)
class _JdConnection(ServedConnection):
    pending: dict[int, _Pending] = field(default_factory=dict)
    last_job: DeclaredJob | None = None
    allocations: list[float] = field(default_factory=list)


class JdsServer(Sv2Listener[_JdConnection]):
    """The Job Declaration Protocol on its own port, same authority key as the pool's Stratum V2."""

    name = "jds"
    max_payload = JD_REQUEST_MAX_PAYLOAD

    def __init__(self, declarator: JobDeclarator, authority_secret: bytes, host: str = "127.0.0.1", port: int = 0,
                 setup_timeout: float = 10.0, idle_timeout: float = 600.0, max_allocations_per_minute: int = 600
                 ) -> None:
        super().__init__(authority_secret, host, port, setup_timeout)
        self.declarator = declarator
        self.idle_timeout = idle_timeout
        self.max_allocations = max_allocations_per_minute
        self.solutions: list[str | None] = []

    async def start(self) -> None:
        await super().start()
        log.info("job declarator server on %s:%d", self.host, self.port)

    def _opened(self, conn: Sv2Connection) -> _JdConnection:
        return _JdConnection(conn)

    def _timeout(self, state: _JdConnection) -> float:
        return self.setup_timeout if state.setup is None else self.idle_timeout

    def _max_payload(self, state: _JdConnection) -> int:
        return JD_MAX_PAYLOAD if state.setup is not None and state.pending else super()._max_payload(state)

    def _dispatch(self, state: _JdConnection, msg: Message) -> bool:
        conn, d = state.conn, self.declarator
        if state.setup is None:
            if not isinstance(msg, SetupConnection):
                self.protocol_errors += 1
                return False
            if msg.protocol != PROTOCOL_JOB_DECLARATION or not msg.min_version <= 2 <= msg.max_version:
                conn.write(SetupConnectionError(0, "unsupported-protocol"))
                return False
            state.setup = msg
            conn.write(SetupConnectionSuccess(2, 0))
            return True
        if isinstance(msg, AllocateMiningJobToken):
            now = time.monotonic()
            state.allocations = [t for t in state.allocations if now - t < 60] + [now]
            if len(state.allocations) > self.max_allocations:  # "rate limited to a rather slow rate"
                self.protocol_errors += 1
                self.peer_log.log(logging.WARNING, "too-fast", "jds: %s allocates tokens too fast; closing", conn.peer)
                return False
            conn.write(d.allocate(msg))
        elif isinstance(msg, DeclareMiningJob):
            reply, pending = d.declare(msg)
            if pending is not None:
                if len(state.pending) >= 16:
                    state.pending.pop(next(iter(state.pending)))
                state.pending[msg.request_id] = pending
            self._note_success(state, reply)
            conn.write(reply)
        elif isinstance(msg, ProvideMissingTransactionsSuccess):
            pend = state.pending.pop(msg.request_id, None)
            if pend is None:  # no declaration waits for these transactions
                return self._unexpected(state, msg)
            reply = d.provide(pend, msg)
            self._note_success(state, reply)
            conn.write(reply)
        elif isinstance(msg, PushSolution):
            if state.last_job is None:
                self.protocol_errors += 1
                return True
            result = d.push_solution(state.last_job, msg)
            self.solutions.append(result)
            self.peer_log.log(logging.INFO, "solution", "jds: PushSolution -> %s",
                              "block accepted" if result is None else result)
        else:
            return self._unexpected(state, msg)
        return True

    def _note_success(self, state: _JdConnection, reply: Message) -> None:
        if isinstance(reply, DeclareMiningJobSuccess):
            state.last_job = self.declarator.jobs.get(reply.new_mining_job_token)
