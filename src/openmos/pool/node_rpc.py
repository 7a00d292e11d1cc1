"""``mos pool`` as a node for tests: its local chain answers Bitcoin Core's JSON-RPC subset
(getblocktemplate, submitblock, getbestblockhash, getblockcount, getblock, getblockheader) with a mempool of synthetic,
well-formed transactions, so a Job Declarator Client can build its own templates fully offline.

``submitblock`` checks what a node checks for a block on this chain: it extends the tip, the header meets
nBits, the merkle root commits to the transactions, the coinbase commits to the height (BIP34), pays no
more than subsidy + fees, and commits to the witnesses (BIP141). An accepted block moves the pool's
chain, removes its transactions from the mempool and makes the pool send new jobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from openmos.base.server import ByteBudget, StreamServer
from openmos.bitcoin import BlockHeader, merkle_root
from openmos.bitcoin.target import bits_to_target
from openmos.bitcoin.tx import (
    COMMITMENT_HEADER,
    Block,
    TxError,
    bip34_height,
    hex_hash,
    parse_block,
    synthetic_tx,
    tx_hash_hex,
    witness_commitment,
)
from openmos.node.http import HttpError, basic_auth, read_head, response
from openmos.node.template import TemplateTx
from openmos.pool.chain import TemplateChain

log = logging.getLogger(__name__)

SUBSIDY = 312_500_000
MAX_REQUEST = 32 << 20  # a 4 MWU block as hex is at most 8 MB; room for JSON around it
MAX_CONNECTIONS = 64
LARGE_REQUEST = 1 << 20  # larger bodies (blocks) share one budget across connections
LARGE_REQUESTS_BUDGET = 64 << 20


@dataclass
class SyntheticMempool:
    """Regtest-like transactions with fee rates spread over 1..100 sat/vB (seeded, reproducible)."""

    seed: bytes = b"openmos-mempool"
    txs: OrderedDict[bytes, TemplateTx] = field(default_factory=OrderedDict)
    _counter: int = 0

    def add_synthetic(self, n: int) -> None:
        for _ in range(n):
            self._counter += 1
            seed = self.seed + struct.pack("<Q", self._counter)
            tx = synthetic_tx(seed, 1 + self._counter % 3, segwit=self._counter % 4 != 0)
            rate = 1 + hashlib.sha256(seed).digest()[0] % 100
            weight = tx.weight()
            self.add(TemplateTx(tx.serialize(), tx.txid(), tx.wtxid(), rate * ((weight + 3) // 4), weight, ()))

    _wtxids: dict[bytes, TemplateTx] = field(default_factory=dict)  # index kept by add/remove

    def add(self, tx: TemplateTx) -> None:
        old = self.txs.get(tx.txid)
        if old is not None:
            self._wtxids.pop(old.wtxid, None)
        self.txs[tx.txid] = tx
        self._wtxids[tx.wtxid] = tx

    def remove(self, txids: list[bytes]) -> None:
        for t in txids:
            tx = self.txs.pop(t, None)
            if tx is not None:
                self._wtxids.pop(tx.wtxid, None)

    def by_wtxid(self) -> dict[bytes, TemplateTx]:
        """The mempool keyed by wtxid (a live read-only view: do not modify)."""
        if len(self._wtxids) != len(self.txs):  # someone changed ``txs`` directly: rebuild the index
            self._wtxids = {t.wtxid: t for t in self.txs.values()}
        return self._wtxids


class RpcFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class PoolNode:
    """The JSON-RPC view of a ``TemplateChain`` plus its mempool."""

    def __init__(self, chain: TemplateChain, mempool: SyntheticMempool | None = None, *,
                 on_new_tip: Callable[[], None] | None = None, refill: int = 0) -> None:
        self.chain = chain
        self.mempool = mempool or SyntheticMempool()
        self.on_new_tip = on_new_tip
        self.refill = refill  # keep at least this many synthetic transactions in the mempool
        self.blocks: dict[bytes, bytes] = {}  # hash -> full block (blocks accepted through submitblock)
        self.block_txids: dict[bytes, tuple[bytes, ...]] = {}
        self.heights: dict[bytes, int] = {}
        self.submitted = 0
        self.tip_listeners: list[Callable[[bytes], None]] = []
        self._gbt_entries: dict[bytes, dict[str, Any]] = {}  # txid -> its getblocktemplate entry (JSON-ready)
        self._announced = chain.tip  # the tip tip_listeners last heard of
        if refill:
            self.mempool.add_synthetic(refill)

    # -- chain view -------------------------------------------------------------------------------

    def _sync_headers(self) -> None:
        """Blocks the pool found from shares (header only) become visible too."""
        for i, header in enumerate(self.chain.blocks):
            h = header.hash()
            self.heights.setdefault(h, i + 1)

    def best_hash(self) -> bytes:
        return self.chain.tip

    def block_count(self) -> int:
        return self.chain.height - 1

    def template(self) -> dict[str, Any]:
        """getblocktemplate's reply (BIP22/23/145 fields Bitcoin Core sends), best fee rate first."""
        txs = sorted(self.mempool.txs.values(), key=lambda t: t.fee_rate, reverse=True)
        chosen, weight = [], 0
        for t in txs:
            if weight + t.weight > 4_000_000 - 4000:
                continue
            chosen.append(t)
            weight += t.weight
        fees = sum(t.fee for t in chosen)
        now = int(self.chain.clock())
        entries = self._gbt_entries
        if len(entries) > 2 * len(self.mempool.txs) + 1024:
            self._gbt_entries = entries = {k: v for k, v in entries.items() if k in self.mempool.txs}
        for t in chosen:
            if t.txid not in entries:
                entries[t.txid] = {"data": t.data.hex(), "txid": tx_hash_hex(t.txid), "hash": tx_hash_hex(t.wtxid),
                                   "depends": [], "fee": t.fee, "sigops": 4, "weight": t.weight}
        return {
            "capabilities": ["proposal"], "version": 0x20000000, "rules": ["csv", "!segwit", "taproot"],
            "vbavailable": {}, "vbrequired": 0, "previousblockhash": tx_hash_hex(self.chain.tip),
            "transactions": [entries[t.txid] for t in chosen],
            "coinbaseaux": {}, "coinbasevalue": SUBSIDY + fees,
            "longpollid": tx_hash_hex(self.chain.tip) + str(len(self.mempool.txs)),
            "target": f"{bits_to_target(self.chain.bits):064x}", "mintime": now - 600,
            "mutable": ["time", "transactions", "prevblock"], "noncerange": "00000000ffffffff",
            "sigoplimit": 80000, "sizelimit": 4000000, "weightlimit": 4000000, "curtime": now,
            "bits": f"{self.chain.bits:08x}", "height": self.chain.height,
            "default_witness_commitment": witness_commitment([t.wtxid for t in chosen]).hex(),
        }

    def submit(self, raw: bytes) -> str | None:
        """None if accepted, else Bitcoin Core's reason string."""
        self.submitted += 1
        try:
            block = parse_block(raw)
        except TxError as exc:
            log.info("pool node: submitblock: undecodable block: %s", exc)
            return "rejected: " + str(exc)[:100]
        header = BlockHeader.parse(block.header)
        h = header.hash()
        if h in self.heights or h in self.blocks:
            return "duplicate"
        reason = self._check(block, header)
        if reason is not None:
            log.info("pool node: submitblock %s rejected: %s", header.hash_hex(), reason)
            return reason
        if not self.chain.submit_block(header):
            return "inconclusive"
        txids = tuple(block.txids())
        self.blocks[h] = raw
        self.block_txids[h] = txids
        self.heights[h] = self.chain.height - 1
        self.mempool.remove(list(txids[1:]))
        self.refill_mempool()
        log.info("pool node: block %d %s accepted via submitblock (%d transactions)", self.chain.height - 1,
                 header.hash_hex(), len(txids))
        self._announce(h)
        return None

    def refill_mempool(self) -> None:
        """New synthetic transactions after a block took some (keeps ``refill`` of them)."""
        if self.refill and len(self.mempool.txs) < self.refill:
            self.mempool.add_synthetic(self.refill - len(self.mempool.txs))

    def _announce(self, h: bytes) -> None:
        self._announced = self.chain.tip
        if self.on_new_tip is not None:
            self.on_new_tip()
        for listener in list(self.tip_listeners):
            listener(h)

    def sync_tip(self) -> None:
        """The chain moved without ``submitblock`` (a block found from pool shares): tell ``tip_listeners``
        (the template provider). The pool itself already knows."""
        if self.chain.tip != self._announced:
            self._announced = self.chain.tip
            for listener in list(self.tip_listeners):
                listener(self.chain.tip)

    def _check(self, block: Block, header: BlockHeader) -> str | None:
        if header.prev_hash != self.chain.tip:
            return "prev-blk-not-found" if header.prev_hash not in self.heights else "inconclusive-not-best-prevblk"
        if header.bits != self.chain.bits:
            return "bad-diffbits"
        if int.from_bytes(header.hash(), "little") > bits_to_target(header.bits):
            return "high-hash"
        txs = block.txs
        if not txs[0].is_coinbase or any(t.is_coinbase for t in txs[1:]):
            return "bad-cb-missing"
        if merkle_root([t.txid() for t in txs]) != header.merkle_root:
            return "bad-txnmrklroot"
        if bip34_height(txs[0].inputs[0].script_sig) != self.chain.height:
            return "bad-cb-height"
        if sum(t.weight() for t in txs) > 4_000_000:
            return "bad-blk-weight"
        known = self.mempool.txs
        fees = 0
        for t in txs[1:]:
            entry = known.get(t.txid())
            fees += entry.fee if entry is not None else 0  # unknown transactions are credited no fee
        if sum(o.value for o in txs[0].outputs) > SUBSIDY + fees:
            return "bad-cb-amount"
        if any(t.witnesses for t in txs[1:]):
            commit = [o.script for o in txs[0].outputs if o.script.startswith(COMMITMENT_HEADER)]
            if not commit or commit[-1] != witness_commitment([t.wtxid() for t in txs[1:]]):
                return "bad-witness-merkle-match"
        return None

    def getblock(self, block_hash: bytes, verbosity: int) -> Any:
        self._sync_headers()
        if block_hash not in self.heights:
            raise RpcFault(-5, "Block not found")
        raw = self.blocks.get(block_hash)
        if verbosity == 0:
            if raw is None:
                raise RpcFault(-1, "block found from pool shares: only its header is stored")
            return raw.hex()
        height = self.heights[block_hash]
        header = BlockHeader.parse(raw[:80]) if raw else next(b for b in self.chain.blocks if b.hash() == block_hash)
        txids = self.block_txids.get(block_hash, ())
        return {"hash": tx_hash_hex(block_hash), "height": height, "version": header.version,
                "merkleroot": tx_hash_hex(header.merkle_root), "time": header.ntime, "nonce": header.nonce,
                "bits": f"{header.bits:08x}", "previousblockhash": tx_hash_hex(header.prev_hash),
                "nTx": len(txids), "tx": [tx_hash_hex(t) for t in txids],
                "confirmations": self.chain.height - height}

    def getblockheader(self, block_hash: bytes, verbose: bool) -> Any:
        self._sync_headers()
        height = self.heights.get(block_hash)
        if height is None or height < 1:
            raise RpcFault(-5, "Block not found")
        headers = self.chain.blocks
        header = headers[height - 1]
        if not verbose:
            return header.serialize().hex()
        times = sorted(h.ntime for h in headers[max(0, height - 11):height])
        return {"hash": tx_hash_hex(block_hash), "confirmations": self.chain.height - height, "height": height,
                "version": header.version, "versionHex": f"{header.version:08x}",
                "merkleroot": tx_hash_hex(header.merkle_root), "time": header.ntime,
                "mediantime": times[len(times) // 2], "nonce": header.nonce, "bits": f"{header.bits:08x}",
                "difficulty": 0x00000000FFFF0000000000000000000000000000000000000000000000000000
                / bits_to_target(header.bits),
                "nTx": len(self.block_txids.get(block_hash, ())) or 1,
                "previousblockhash": tx_hash_hex(header.prev_hash)}

    # -- JSON-RPC dispatch --------------------------------------------------------------------------

    def dispatch(self, method: Any, params: Any) -> Any:
        if not isinstance(params, list):
            params = [] if params is None else None
            if params is None:
                raise RpcFault(-32602, "params must be an array")
        if method == "getbestblockhash":
            return tx_hash_hex(self.best_hash())
        if method == "getblockcount":
            return self.block_count()
        if method == "getblocktemplate":
            request = params[0] if params else {}
            if not isinstance(request, dict) or "segwit" not in request.get("rules", []):
                raise RpcFault(-8, 'getblocktemplate must be called with the segwit rule set (call with '
                                   '{"rules": ["segwit"]})')
            return self.template()
        if method == "submitblock":
            if not params or not isinstance(params[0], str):
                raise RpcFault(-1, "submitblock \"hexdata\"")
            try:
                raw = bytes.fromhex(params[0])
            except ValueError:
                raise RpcFault(-22, "Block decode failed") from None
            return self.submit(raw)
        if method == "getblock":
            if not params or not isinstance(params[0], str):
                raise RpcFault(-1, "getblock \"blockhash\" ( verbosity )")
            verbosity = params[1] if len(params) > 1 else 1
            if not isinstance(verbosity, int) or isinstance(verbosity, bool) or verbosity not in (0, 1):
                raise RpcFault(-8, "verbosity must be 0 or 1")
            try:
                return self.getblock(hex_hash(params[0], "blockhash"), verbosity)
            except TxError as exc:
                raise RpcFault(-8, str(exc)) from None
        if method == "getblockheader":
            if not params or not isinstance(params[0], str):
                raise RpcFault(-1, "getblockheader \"blockhash\" ( verbose )")
            verbose = params[1] if len(params) > 1 else True
            if not isinstance(verbose, bool):
                raise RpcFault(-8, "verbose must be a boolean")
            try:
                return self.getblockheader(hex_hash(params[0], "blockhash"), verbose)
            except TxError as exc:
                raise RpcFault(-8, str(exc)) from None
        raise RpcFault(-32601, "Method not found")


class NodeRpcServer:
    """HTTP JSON-RPC front end of a ``PoolNode``. ``await start()``; ``await stop()``."""

    def __init__(self, node: PoolNode, host: str = "127.0.0.1", port: int = 0, user: str = "",
                 password: str = "", timeout: float = 30.0) -> None:
        self.node = node
        self.host, self.port = host, port
        self.auth = basic_auth(user, password) if user or password else ""
        self.timeout = timeout
        self.errors = 0
        self.budget = ByteBudget(LARGE_REQUESTS_BUDGET)
        self._listener = StreamServer(self._handle, max_connections=MAX_CONNECTIONS)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self.port = await self._listener.start(self.host, self.port, limit=1 << 16)
        log.info("local pool answers Bitcoin Core JSON-RPC on %s", self.url)

    async def stop(self) -> None:
        await self._listener.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(self.timeout):
                        start, headers, length = await read_head(reader, MAX_REQUEST)
                        # Who is asking, before the body is buffered (it may be 32 MiB).
                        if not start.startswith("POST "):
                            raise HttpError(405, "JSON-RPC needs POST")
                        if self.auth and headers.get("authorization") != self.auth:
                            raise HttpError(401, "Unauthorized")
                        body = await self._read_body(reader, length)
                except HttpError as exc:
                    self.errors += 1
                    writer.write(response(exc.status, exc.reason, orjson.dumps({"error": exc.reason})))
                    await writer.drain()
                    return
                status, reply = self._reply(body)
                writer.write(response(status, "OK" if status == 200 else "Error", reply))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _read_body(self, reader: asyncio.StreamReader, length: int) -> bytes:
        """A body over LARGE_REQUEST (a submitblock) is read only while such bodies of all connections stay
        within the budget: 64 connections x 32 MiB must not add up."""
        if length <= LARGE_REQUEST:
            return await reader.readexactly(length)
        if not self.budget.take(length):
            raise HttpError(503, "busy with other large requests; retry")
        try:
            return await reader.readexactly(length)
        finally:
            self.budget.give(length)

    def _reply(self, body: bytes) -> tuple[int, bytes]:
        req_id: Any = None
        try:
            req = orjson.loads(body)
            if not isinstance(req, dict):
                raise RpcFault(-32600, "Invalid Request object (batches are not supported)")
            req_id = req.get("id")
            if not isinstance(req_id, int | float | str | None):
                raise RpcFault(-32600, "Invalid Request object (id must be a number, a string or null)")
            result = self.node.dispatch(req.get("method"), req.get("params", []))
            return 200, orjson.dumps({"result": result, "error": None, "id": req_id})
        except (ValueError, RecursionError):
            self.errors += 1
            return 500, orjson.dumps({"result": None, "error": {"code": -32700, "message": "Parse error"}, "id": None})
        except RpcFault as exc:
            self.errors += 1
            status = 404 if exc.code == -32601 else 500
            return status, orjson.dumps({"result": None, "error": {"code": exc.code, "message": str(exc)},
                                         "id": req_id if isinstance(req_id, int | float | str) else None})
