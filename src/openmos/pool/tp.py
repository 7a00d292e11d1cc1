"""A Template Provider (sv2-spec 7, Template Distribution Protocol) for ``mos pool``'s local chain.

After ``SetupConnection`` (protocol 2) the client MUST send ``CoinbaseOutputConstraints``; we answer with
the current best template (``NewTemplate`` with ``future_template`` then ``SetNewPrevHash``) and send a new
pair whenever the chain moves. Templates take the mempool by fee rate within the weight left after the
sv2-spec reservation (1168 WU + 4 x the client's additional output bytes). ``RequestTransactionData``
returns the template's transactions; ``SubmitSolution`` rebuilds the block and submits it to the chain.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from openmos.bitcoin import BlockHeader, merkle_root_from_branch, sha256d
from openmos.bitcoin.merkle import merkle_branches
from openmos.bitcoin.target import bits_to_target
from openmos.bitcoin.tx import MAX_BLOCK_WEIGHT, TxError, TxOut, bip34_height_push, parse_tx, serialize_block
from openmos.bitcoin.tx import witness_commitment as commitment_script
from openmos.node.template import RESERVED_WEIGHT, TemplateTx
from openmos.pool.node_rpc import SUBSIDY, PoolNode
from openmos.pool.sv2_listener import ServedConnection, Sv2Listener
from openmos.stratum.v2.codec import int_to_u256
from openmos.stratum.v2.messages import (
    PROTOCOL_TEMPLATE_DISTRIBUTION,
    Message,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    largest_payload,
)
from openmos.stratum.v2.template_distribution import (
    CoinbaseOutputConstraints,
    NewTemplate,
    RequestTransactionData,
    RequestTransactionDataError,
    RequestTransactionDataSuccess,
    SubmitSolution,
    TdpSetNewPrevHash,
)
from openmos.stratum.v2.transport import Sv2Connection

log = logging.getLogger(__name__)

MAX_TEMPLATES = 64
# Clients send small messages (a SubmitSolution's coinbase at most 64 KiB); RequestTransactionData.Success
# goes the other way.
TP_MAX_PAYLOAD = largest_payload(CoinbaseOutputConstraints, RequestTransactionData, SubmitSolution)


@dataclass(frozen=True)
class _Template:
    template_id: int
    prev_hash: bytes
    txs: tuple[TemplateTx, ...]
    merkle_path: tuple[bytes, ...]


@dataclass(eq=False)
class _TpConnection(ServedConnection):
    constraints: CoinbaseOutputConstraints | None = None
    templates: OrderedDict[int, _Template] = field(default_factory=OrderedDict)


class TemplateProvider(Sv2Listener[_TpConnection]):
    name = "tp"
    max_payload = TP_MAX_PAYLOAD

    def __init__(self, node: PoolNode, authority_secret: bytes, host: str = "127.0.0.1", port: int = 0,
                 setup_timeout: float = 10.0) -> None:
        super().__init__(authority_secret, host, port, setup_timeout)
        self.node = node
        self.connections: set[_TpConnection] = set()
        self.solutions: list[str | None] = []
        self._ids = itertools.count(1)

    async def start(self) -> None:
        self.node.tip_listeners.append(self._on_tip)
        await super().start()
        log.info("template provider (Template Distribution Protocol) on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.node.tip_listeners.remove(self._on_tip)
        await super().stop()

    def _opened(self, conn: Sv2Connection) -> _TpConnection:
        state = _TpConnection(conn)
        self.connections.add(state)
        return state

    def _timeout(self, state: _TpConnection) -> float | None:
        return self.setup_timeout if state.constraints is None else None

    def _closed(self, state: _TpConnection) -> None:
        self.connections.discard(state)

    def _on_tip(self, _hash: bytes) -> None:
        for state in list(self.connections):
            if state.constraints is not None:
                self._send_template(state)

    def _send_template(self, state: _TpConnection) -> None:
        assert state.constraints is not None
        budget = (MAX_BLOCK_WEIGHT - RESERVED_WEIGHT - 4 * state.constraints.coinbase_output_max_additional_size)
        chosen, weight = [], 0
        for t in sorted(self.node.mempool.txs.values(), key=lambda t: t.fee_rate, reverse=True):
            if weight + t.weight <= budget:
                chosen.append(t)
                weight += t.weight
        chain = self.node.chain
        tid = next(self._ids)
        tpl = _Template(tid, chain.tip, tuple(chosen), tuple(merkle_branches([t.txid for t in chosen])))
        state.templates[tid] = tpl
        while len(state.templates) > MAX_TEMPLATES:
            state.templates.popitem(last=False)
        commit = TxOut(0, commitment_script([t.wtxid for t in chosen])).serialize()
        conn = state.conn
        conn.write(NewTemplate(tid, True, 0x20000000, 2, bip34_height_push(chain.height), 0xFFFFFFFF,
                               SUBSIDY + sum(t.fee for t in chosen), 1, commit, 0, tpl.merkle_path))
        conn.write(TdpSetNewPrevHash(tid, chain.tip, int(chain.clock()), chain.bits,
                                     int_to_u256(bits_to_target(chain.bits))))

    def _dispatch(self, state: _TpConnection, msg: Message) -> bool:
        conn = state.conn
        if state.setup is None:
            if not isinstance(msg, SetupConnection) or msg.protocol != PROTOCOL_TEMPLATE_DISTRIBUTION:
                if isinstance(msg, SetupConnection):
                    conn.write(SetupConnectionError(0, "unsupported-protocol"))
                self.protocol_errors += 1
                return False
            state.setup = msg
            conn.write(SetupConnectionSuccess(2, 0))
            return True
        if isinstance(msg, CoinbaseOutputConstraints):
            if msg.coinbase_output_max_additional_size > 100_000:
                conn.write(SetupConnectionError(0, "coinbase-output-constraints-too-large"))
                return False
            state.constraints = msg
            self._send_template(state)
        elif state.constraints is None:
            self.protocol_errors += 1  # CoinbaseOutputConstraints MUST come first
            return False
        elif isinstance(msg, RequestTransactionData):
            tpl = state.templates.get(msg.template_id)
            if tpl is None or tpl.prev_hash != self.node.chain.tip:
                conn.write(RequestTransactionDataError(msg.template_id, "template-id-not-found" if tpl is None
                                                       else "stale-template-id"))
            else:
                conn.write(RequestTransactionDataSuccess(msg.template_id, b"", tuple(t.data for t in tpl.txs)))
        elif isinstance(msg, SubmitSolution):
            self.solutions.append(self._solution(state, msg))
        else:
            return self._unexpected(state, msg)
        return True

    def _solution(self, state: _TpConnection, msg: SubmitSolution) -> str | None:
        tpl = state.templates.get(msg.template_id)
        if tpl is None:
            return "template-id-not-found"
        try:
            stripped = parse_tx(msg.coinbase_tx).serialize(witness=False)
        except TxError as exc:
            return f"bad-coinbase: {exc}"
        root = merkle_root_from_branch(sha256d(stripped), tpl.merkle_path)
        header = BlockHeader(msg.version, tpl.prev_hash, root, msg.header_timestamp, self.node.chain.bits,
                             msg.header_nonce)
        result = self.node.submit(serialize_block(header.serialize(), [msg.coinbase_tx, *(t.data for t in tpl.txs)]))
        self.peer_log.log(logging.INFO, "solution", "tp: SubmitSolution for template %d -> %s", msg.template_id,
                          result or "block accepted")
        return result
