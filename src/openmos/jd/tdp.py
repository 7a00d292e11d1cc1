"""A Template Distribution Protocol client (sv2-spec 7): templates pushed by a V2 Template Provider.

``connect()`` sets up protocol 2 and sends ``CoinbaseOutputConstraints``; ``NewTemplate`` and
``SetNewPrevHash`` then arrive unsolicited and are kept (bounded) with the active template marked;
``request_transactions`` asks for a template's transaction data and ``submit_solution`` hands a solved block
back to the provider.

``TdpNode`` answers the node calls ``mos jd`` makes (``getbestblockhash``, ``getblocktemplate``,
``submitblock``) from a Template Provider instead of JSON-RPC: the active template and its transactions
become a ``getblocktemplate``-shaped reply (checked like one), a found block becomes ``SubmitSolution``.
The provider chooses the transactions and TDP carries no per-transaction fees, so such templates are mined
as the provider built them (no fee-rate or exclusion policy).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from openmos.bitcoin.merkle import merkle_branches
from openmos.bitcoin.target import bits_to_target
from openmos.bitcoin.tx import TxError, bip34_height, parse_block, parse_tx, tx_hash_hex
from openmos.jd.client import DeclarationFailed, _Upstream
from openmos.node.rpc import RpcError
from openmos.stratum.v2.codec import Sv2CodecError
from openmos.stratum.v2.messages import PROTOCOL_TEMPLATE_DISTRIBUTION, Message, SetupConnection
from openmos.stratum.v2.noise import NoiseError
from openmos.stratum.v2.template_distribution import (
    CoinbaseOutputConstraints,
    NewTemplate,
    RequestTransactionData,
    RequestTransactionDataError,
    RequestTransactionDataSuccess,
    SubmitSolution,
    TdpSetNewPrevHash,
)

log = logging.getLogger(__name__)

MAX_TEMPLATES = 64
TDP_MAX_PAYLOAD = 16 << 20  # RequestTransactionData.Success carries a whole block's transactions


class TdpClient(_Upstream):
    def __init__(self, host: str, port: int, authority: bytes, *, max_additional_size: int = 100,
                 max_additional_sigops: int = 400, timeout: float = 10.0,
                 on_template: Callable[[NewTemplate, TdpSetNewPrevHash], None] | None = None) -> None:
        super().__init__(host, port, authority, timeout)
        self.constraints = CoinbaseOutputConstraints(max_additional_size, max_additional_sigops)
        self.templates: OrderedDict[int, NewTemplate] = OrderedDict()
        self.prev: TdpSetNewPrevHash | None = None
        self.on_template = on_template
        self.changed = asyncio.Event()
        self._tdp_waiting: dict[int, asyncio.Future[Message]] = {}

    async def connect(self) -> None:
        await self._open(SetupConnection(PROTOCOL_TEMPLATE_DISTRIBUTION, 2, 2, 0, self.host, self.port, "OpenMOS",
                                         "", "openmos-jdc", ""), TDP_MAX_PAYLOAD)
        assert self.conn is not None
        await self.conn.send(self.constraints)

    @property
    def active(self) -> NewTemplate | None:
        """The template to mine now: the one the last SetNewPrevHash activated, or a later non-future one."""
        if self.prev is None:
            return None
        current = [t for t in self.templates.values()
                   if t.template_id == self.prev.template_id or (not t.future_template
                                                                 and t.template_id > self.prev.template_id)]
        return max(current, key=lambda t: t.template_id, default=None)

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, NewTemplate):
            self.templates[msg.template_id] = msg
            while len(self.templates) > MAX_TEMPLATES:
                self.templates.popitem(last=False)
        elif isinstance(msg, TdpSetNewPrevHash):
            if msg.template_id not in self.templates:
                self.protocol_errors += 1
                log.warning("tdp: SetNewPrevHash for unknown template %d", msg.template_id)
                return
            self.prev = msg
            self.templates = OrderedDict((k, v) for k, v in self.templates.items() if k >= msg.template_id)
        else:
            super().on_message(msg)
            return
        active = self.active
        if active is not None and self.prev is not None:
            self.changed.set()
            if self.on_template is not None:
                self.on_template(active, self.prev)

    async def request_transactions(self, template_id: int) -> tuple[bytes, ...]:
        """The template's transactions (without the coinbase); DeclarationFailed if the provider refuses."""
        assert self.conn is not None
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        key = template_id & 0xFFFFFFFF  # replies carry template_id, routed here by hand
        self._tdp_waiting[key] = fut
        try:
            await self.conn.send(RequestTransactionData(template_id))
            reply = await asyncio.wait_for(fut, self.timeout)
        finally:
            self._tdp_waiting.pop(key, None)
        if isinstance(reply, RequestTransactionDataError):
            raise DeclarationFailed(reply.error_code)
        assert isinstance(reply, RequestTransactionDataSuccess)
        return reply.transaction_list

    def _route(self, msg: Message) -> None:
        if isinstance(msg, RequestTransactionDataSuccess | RequestTransactionDataError):
            fut = self._tdp_waiting.pop(msg.template_id & 0xFFFFFFFF, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
                return
        super()._route(msg)

    async def submit_solution(self, template_id: int, version: int, ntime: int, nonce: int, coinbase: bytes) -> None:
        assert self.conn is not None
        await self.conn.send(SubmitSolution(template_id, version, ntime, nonce, coinbase))


class TdpNode:
    """The node calls a ``JdService`` makes, answered by a V2 Template Provider (reconnecting as needed)."""

    def __init__(self, host: str, port: int, authority: bytes, *, max_additional_size: int = 100,
                 timeout: float = 10.0) -> None:
        self.host, self.port, self.authority = host, port, authority
        self.max_additional_size, self.timeout = max_additional_size, timeout
        self.client = self._new_client()
        self.solutions = 0
        self._template_ids: OrderedDict[bytes, int] = OrderedDict()  # prev hash + hash of txids -> template id
        self._checked: dict[bytes, tuple[bytes, bytes, int]] = {}  # tx data -> (txid, wtxid, weight), last template

    def _new_client(self) -> TdpClient:
        return TdpClient(self.host, self.port, self.authority, max_additional_size=self.max_additional_size,
                         timeout=self.timeout)

    async def _ready(self) -> TdpClient:
        if not self.client.connected:
            await self.client.close()
            self.client = self._new_client()
            try:
                await self.client.connect()
                await asyncio.wait_for(self.client.changed.wait(), self.timeout)
            except (OSError, ConnectionError, TimeoutError, NoiseError, DeclarationFailed, Sv2CodecError,
                    asyncio.IncompleteReadError) as exc:
                await self.client.close()
                raise RpcError(f"template provider {self.host}:{self.port} unreachable: "
                               f"{exc or type(exc).__name__}") from None
        return self.client

    async def close(self) -> None:
        await self.client.close()

    async def getbestblockhash(self) -> str:
        client = await self._ready()
        if client.prev is None:
            raise RpcError("the template provider has not sent SetNewPrevHash yet")
        return tx_hash_hex(client.prev.prev_hash)

    async def getblockheader(self, block_hash: str) -> dict[str, Any]:
        raise RpcError("getblockheader: a template provider does not serve block headers")

    async def getblocktemplate(self) -> dict[str, Any]:
        """The active template as ``getblocktemplate`` would describe it (fees unknown: 0 each, the coinbase
        value is the provider's ``coinbase_tx_value_remaining``)."""
        client = await self._ready()
        template, prev = client.active, client.prev
        if template is None or prev is None:
            raise RpcError("the template provider has no active template")
        try:
            txs = await client.request_transactions(template.template_id)
        except (DeclarationFailed, ConnectionError, TimeoutError) as exc:
            raise RpcError(f"RequestTransactionData for template {template.template_id}: "
                           f"{exc or type(exc).__name__}") from None
        checked: dict[bytes, tuple[bytes, bytes, int]] = {}
        entries = []
        for i, data in enumerate(txs):
            ids = self._checked.get(data) or checked.get(data)
            if ids is None:
                try:
                    tx = parse_tx(data)
                except TxError as exc:
                    raise RpcError(f"template provider: transaction {i}: {exc}") from None
                ids = (tx.txid(), tx.wtxid(), tx.weight())
            checked[data] = ids
            entries.append({"data": data.hex(), "txid": tx_hash_hex(ids[0]), "hash": tx_hash_hex(ids[1]), "fee": 0,
                            "depends": [], "weight": ids[2]})
        self._checked = checked
        txids = [checked[d][0] for d in txs]
        if tuple(merkle_branches(txids)) != template.merkle_path:
            raise RpcError("template provider: its merkle path does not match the transactions it sent")
        height = bip34_height(template.coinbase_prefix)
        if height is None:
            raise RpcError("template provider: the coinbase prefix does not start with the BIP34 height")
        self._template_ids[prev.prev_hash + hashlib.sha256(b"".join(txids)).digest()] = template.template_id
        while len(self._template_ids) > MAX_TEMPLATES:
            self._template_ids.popitem(last=False)
        return {"rules": ["segwit"], "version": template.version, "previousblockhash": tx_hash_hex(prev.prev_hash),
                "transactions": entries, "coinbasevalue": template.coinbase_tx_value_remaining,
                "target": f"{bits_to_target(prev.n_bits):064x}", "bits": f"{prev.n_bits:08x}",
                "curtime": prev.header_timestamp, "mintime": prev.header_timestamp, "height": height,
                "template_id": template.template_id}

    async def submitblock(self, block_hex: str) -> str | None:
        """``SubmitSolution`` for the template the block was built from; a reason string if there is none."""
        try:
            block = parse_block(bytes.fromhex(block_hex))
        except (TxError, ValueError) as exc:
            return f"rejected: {exc}"
        prev = block.header[4:36]
        txids = [t.txid() for t in block.txs[1:]]
        template_id = self._template_ids.get(prev + hashlib.sha256(b"".join(txids)).digest())
        if template_id is None:
            return "not built from a template of this provider"
        client = await self._ready()
        coinbase = block.txs[0].serialize()
        version, ntime, nonce = (int.from_bytes(block.header[o:o + 4], "little") for o in (0, 68, 76))
        try:
            await client.submit_solution(template_id, version, ntime, nonce, coinbase)
        except (ConnectionError, OSError) as exc:
            raise RpcError(f"SubmitSolution: {exc}") from None
        self.solutions += 1
        log.info("tdp: SubmitSolution sent for template %d", template_id)
        return None
