"""Node JSON-RPC: the client against recorded Bitcoin Core request/response fixtures (the RPC
documentation's shape; the transactions in them are synthetic), template parsing and policy, the pool's
JSON-RPC node end to end (template -> own block -> submitblock -> getblock), and hostile peers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from openmos.base.server import ByteBudget
from openmos.bitcoin import BlockHeader, merkle_root_from_branch, sha256d
from openmos.bitcoin.target import bits_to_target
from openmos.bitcoin.tx import (
    TxError,
    TxOut,
    hex_hash,
    parse_block,
    parse_tx,
    serialize_block,
    split_coinbase_tx,
    synthetic_tx,
    tx_hash_hex,
    witness_commitment,
)
from openmos.node import NodeRpcClient, NodeTemplate, RpcError, TemplatePolicy, select_transactions
from openmos.node.http import read_message, response
from openmos.node.template import TemplateError, TxCache, build_work
from openmos.pool.chain import TemplateChain
from openmos.pool.node_rpc import NodeRpcServer, PoolNode, SyntheticMempool

from helpers import wait_for

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "node_rpc" / "bitcoin_core.json").read_text())
BLOCK_FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "node_rpc" / "bitcoin_core_block.json").read_text())
POOL_SCRIPT = bytes.fromhex("0014") + bytes(range(20))


class RecordedNode:
    """Replays recorded exchanges; fails the test if the client's request differs from the recording."""

    def __init__(self, exchanges: list[dict[str, Any]], auth: str | None = None) -> None:
        self.exchanges = list(exchanges)
        self.auth = auth
        self.mismatches: list[str] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while self.exchanges:
                _start, headers, body = await read_message(reader, 1 << 20)
                if self.auth is not None and headers.get("authorization") != self.auth:
                    self.mismatches.append("authorization")
                ex = self.exchanges.pop(0)
                if json.loads(body) != ex["request"]:
                    self.mismatches.append(f"{json.loads(body)} != {ex['request']}")
                writer.write(response(ex["status"], "X", json.dumps(ex["response"]).encode()))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_client_against_recorded_bitcoin_core_exchanges() -> None:
    node = RecordedNode(FIXTURES, auth="Basic dXNlcjpwYXNz")  # user:pass
    async with node as port:
        client = NodeRpcClient("127.0.0.1", port, "user", "pass")
        gbt = await client.getblocktemplate()
        assert await client.getbestblockhash() == gbt["previousblockhash"]
        assert await client.getblockcount() == 871999
        assert await client.submitblock("00") == "high-hash"
        with pytest.raises(RpcError, match="Block not found") as info:
            await client.getblock("00" * 31 + "01")
        assert info.value.code == -5
        with pytest.raises(RpcError, match="initial sync"):
            await client.getblocktemplate()
        await client.close()
    assert node.mismatches == []
    template = NodeTemplate.from_rpc(gbt)
    assert template.height == 872000 and template.subsidy == 312_500_000
    assert [t.depends for t in template.transactions] == [(), (), (0,)]
    assert template.bits == 0x17034A5A and template.target == bits_to_target(0x17034A5A)
    assert witness_commitment([t.wtxid for t in template.transactions]).hex() == gbt["default_witness_commitment"]


async def test_client_against_recorded_block_calls() -> None:
    """getblockheader / getblock / submitblock (accepted, duplicate, undecodable) in Bitcoin Core's shapes."""
    node = RecordedNode(BLOCK_FIXTURES)
    async with node as port:
        client = NodeRpcClient("127.0.0.1", port)
        new = BLOCK_FIXTURES[0]["response"]["result"]["hash"]
        header = await client.getblockheader(new)
        assert header["height"] == 872000 and header["previousblockhash"] == FIXTURES[1]["response"]["result"]
        assert isinstance(header["mediantime"], int) and header["bits"] == "17034a5a"
        block = await client.getblock(new)
        assert block["nTx"] == len(block["tx"]) == 3 and block["hash"] == new
        assert await client.submitblock("00") is None
        assert await client.submitblock("00") == "duplicate"
        with pytest.raises(RpcError, match="Block not found") as info:
            await client.getblockheader("00" * 31 + "01")
        assert info.value.code == -5
        with pytest.raises(RpcError, match="decode failed") as info:
            await client.submitblock("zz")
        assert info.value.code == -22
        assert await client.getbestblockhash() == new
        assert await client.getblockcount() == 872000
        await client.close()
    assert node.mismatches == [] and node.exchanges == []


def test_template_refuses_inconsistent_node_data() -> None:
    gbt = json.loads(json.dumps(FIXTURES[0]["response"]["result"]))
    bad = json.loads(json.dumps(gbt))
    bad["transactions"][0]["txid"] = "11" * 32
    with pytest.raises(TemplateError, match="does not hash"):
        NodeTemplate.from_rpc(bad)
    for key, value in [("height", -1), ("coinbasevalue", 10), ("bits", "zz"), ("rules", ["csv"]),
                       ("previousblockhash", "00"), ("version", 1e400), ("transactions", {"a": 1})]:
        bad = json.loads(json.dumps(gbt))
        bad[key] = value
        with pytest.raises(TemplateError):
            NodeTemplate.from_rpc(bad)
    bad = json.loads(json.dumps(gbt))
    bad["transactions"][1]["depends"] = [3]  # a later transaction
    with pytest.raises(TemplateError, match="depends"):
        NodeTemplate.from_rpc(bad)


def test_tx_cache_rechecks_only_new_or_changed_transactions() -> None:
    gbt = json.loads(json.dumps(FIXTURES[0]["response"]["result"]))
    cache = TxCache()
    first = NodeTemplate.from_rpc(gbt, verify="hash", cache=cache)
    assert cache.misses == 3 and cache.hits == 0
    again = NodeTemplate.from_rpc(json.loads(json.dumps(gbt)), verify="hash", cache=cache)
    assert again.transactions == first.transactions and cache.hits == 3
    # The same bytes claiming another transaction's ids, or new ids for known bytes: checked again, refused.
    lying = json.loads(json.dumps(gbt))
    lying["transactions"][0]["data"] = gbt["transactions"][1]["data"]
    with pytest.raises(TemplateError, match="does not hash"):
        NodeTemplate.from_rpc(lying, verify="hash", cache=cache)
    renamed = json.loads(json.dumps(gbt))
    renamed["transactions"][1]["hash"] = "22" * 32
    with pytest.raises(TemplateError, match="does not hash"):
        NodeTemplate.from_rpc(renamed, verify="hash", cache=cache)
    # A cache filled by hash checks does not vouch for a full check (weight recomputed by a full parse).
    full = NodeTemplate.from_rpc(gbt, verify="full", cache=cache)
    assert [t.weight for t in full.transactions] == [t.tx().weight() for t in full.transactions]
    assert all(e.weight is not None for e in cache.entries.values())
    # Fees and depends are read fresh each time, never from the cache.
    cheaper = json.loads(json.dumps(gbt))
    cheaper["transactions"][0]["fee"] = 1
    assert NodeTemplate.from_rpc(cheaper, verify="hash", cache=cache).transactions[0].fee == 1
    for key, value in [("fee", -1), ("fee", 1e400), ("fee", True), ("weight", 10**9), ("depends", "1")]:
        bad = json.loads(json.dumps(gbt))
        bad["transactions"][0][key] = value
        with pytest.raises(TemplateError):
            NodeTemplate.from_rpc(bad, verify="hash", cache=cache)
    assert len(cache.entries) <= len(gbt["transactions"])  # bounded by one template


def test_policy_min_fee_rate_exclusions_dependents_and_weight() -> None:
    template = NodeTemplate.from_rpc(FIXTURES[0]["response"]["result"])
    txs = template.transactions
    everything = select_transactions(template, TemplatePolicy())
    assert everything.txs == txs and everything.fees == sum(t.fee for t in txs)
    # Excluding tx 0 also drops tx 2, which depends on it (GBT "depends": [1], 1-based).
    no_parent = select_transactions(template, TemplatePolicy(excluded_txids=frozenset({txs[0].txid})))
    assert no_parent.txs == (txs[1],) and no_parent.excluded == 2
    rate = sorted(t.fee_rate for t in txs)
    cheap_out = select_transactions(template, TemplatePolicy(min_fee_rate=rate[0] + 0.001))
    assert all(t.fee_rate > rate[0] for t in cheap_out.txs)
    script = txs[0].tx().outputs[0].script
    no_script = select_transactions(template, TemplatePolicy(excluded_scripts=frozenset({script})))
    assert txs[0] not in no_script.txs and txs[2] not in no_script.txs
    tight = select_transactions(template, TemplatePolicy(max_weight=1168 + txs[0].weight))
    assert tight.txs == (txs[0],)
    for bad in [{"min_fee_rate": float("nan")}, {"min_fee_rate": -1.0}, {"max_weight": 10**9}, {"max_weight": 5}]:
        with pytest.raises(ValueError):
            TemplatePolicy(**bad)  # type: ignore[arg-type]


def test_built_work_makes_a_consensus_shaped_block() -> None:
    template = NodeTemplate.from_rpc(FIXTURES[0]["response"]["result"])
    sel = select_transactions(template, TemplatePolicy())
    work = build_work(template, sel, [TxOut(0, POOL_SCRIPT), TxOut(0, b"\x6a\x02hi")], 8, b"/j/")
    en = bytes(range(8))
    coinbase = parse_tx(work.coinbase.full(en))
    assert coinbase.is_coinbase and coinbase.serialize(witness=False) == work.coinbase.stripped(en)
    assert coinbase.outputs[0] == TxOut(template.coinbase_value, POOL_SCRIPT)  # the pool payout gets it all
    assert work.script_prefix == bytes.fromhex("03404e0d") + b"/j/"  # BIP34 height 872000, then the tag
    long_tag = build_work(template, sel, [TxOut(0, POOL_SCRIPT)], 8, b"/a-long-tag/")
    assert long_tag.script_prefix == bytes.fromhex("03404e0d") + b"/a-l"  # cut to 8 bytes
    assert coinbase.outputs[-1].script == witness_commitment(work.wtxids)
    root = merkle_root_from_branch(sha256d(work.coinbase.stripped(en)), work.merkle_path)
    block = parse_block(serialize_block(BlockHeader(template.version, template.prev_hash, root, 0, template.bits,
                                                    0).serialize(), [work.coinbase.full(en)]
                                        + [t.data for t in sel.txs]))
    assert [t.txid() for t in block.txs[1:]] == list(work.txids)


def test_tx_parser_refuses_hostile_bytes() -> None:
    tx = synthetic_tx(b"x")
    raw = tx.serialize()
    assert parse_tx(raw) == tx
    for bad in [b"", raw[:-1], raw + b"\0", raw[:4] + b"\0\x01\xfe\xff\xff\xff\x7f",  # 2^31 inputs claimed
                raw[:4] + b"\x00\x01\x00", raw[:6] + b"\xfd\x01\x00"]:  # non-canonical count
        with pytest.raises(TxError):
            parse_tx(bad)
    with pytest.raises(TxError):
        hex_hash("zz" * 32)


@pytest.fixture
async def pool_node() -> AsyncIterator[tuple[PoolNode, NodeRpcServer, NodeRpcClient]]:
    chain = TemplateChain(network_difficulty=0.00001)  # easy enough to find a block with a few k hashes
    node = PoolNode(chain, SyntheticMempool(), refill=40)
    server = NodeRpcServer(node, user="u", password="p")
    await server.start()
    client = NodeRpcClient("127.0.0.1", server.port, "u", "p")
    yield node, server, client
    await client.close()
    await server.stop()


def _solve(header: BlockHeader) -> BlockHeader:
    target = bits_to_target(header.bits)
    for nonce in range(1 << 32):
        h = header.with_nonce(nonce)
        if int.from_bytes(h.hash(), "little") <= target:
            return h
    raise AssertionError("no nonce")


async def test_pool_node_end_to_end_with_own_transaction_choice(
        pool_node: tuple[PoolNode, NodeRpcServer, NodeRpcClient]) -> None:
    node, _server, client = pool_node
    assert await client.getblockcount() == 0
    template = NodeTemplate.from_rpc(await client.getblocktemplate())
    assert len(template.transactions) == 40
    policy = TemplatePolicy(min_fee_rate=50.0, excluded_txids=frozenset({template.transactions[0].txid}))
    sel = select_transactions(template, policy)
    assert 0 < len(sel.txs) < 40
    work = build_work(template, sel, [TxOut(0, POOL_SCRIPT)], 8)
    en = bytes(8)
    root = merkle_root_from_branch(sha256d(work.coinbase.stripped(en)), work.merkle_path)
    header = _solve(BlockHeader(template.version, template.prev_hash, root, template.curtime, template.bits, 0))
    block = serialize_block(header.serialize(), [work.coinbase.full(en)] + [t.data for t in sel.txs])
    # A block paying more than subsidy + fees is refused; so is one that lies about its merkle root.
    greedy = split_coinbase_tx(2, work.script_prefix, 8, 0xFFFFFFFF, [TxOut(work.value + 1, POOL_SCRIPT),
                                                                     work.outputs[-1]], 0, segwit=True)
    groot = merkle_root_from_branch(sha256d(greedy.stripped(en)), work.merkle_path)
    gheader = _solve(BlockHeader(template.version, template.prev_hash, groot, template.curtime, template.bits, 0))
    assert await client.submitblock(serialize_block(gheader.serialize(), [greedy.full(en)]
                                                    + [t.data for t in sel.txs]).hex()) == "bad-cb-amount"
    assert await client.submitblock(serialize_block(header.serialize(), [work.coinbase.full(b"\1" * 8)]
                                                    + [t.data for t in sel.txs]).hex()) == "bad-txnmrklroot"
    assert await client.submitblock(block.hex()) is None
    assert await client.submitblock(block.hex()) == "duplicate"
    assert await client.getblockcount() == 1
    assert await client.getbestblockhash() == header.hash_hex()
    info = await client.getblock(header.hash_hex())
    assert info["tx"][1:] == [tx_hash_hex(t.txid) for t in sel.txs] and info["height"] == 1
    assert await client.getblock(header.hash_hex(), 0) == block.hex()
    assert not set(work.txids) & set(node.mempool.txs)  # mined transactions left the mempool
    nxt = NodeTemplate.from_rpc(await client.getblocktemplate())
    assert nxt.prev_hash == header.hash() and nxt.height == 2
    hdr = await client.getblockheader(header.hash_hex())
    assert hdr["height"] == 1 and hdr["previousblockhash"] == tx_hash_hex(template.prev_hash)
    assert hdr["mediantime"] == header.ntime and hdr["bits"] == f"{template.bits:08x}"
    assert hdr["nTx"] == 1 + len(sel.txs)
    assert await client.call("getblockheader", header.hash_hex(), False) == header.serialize().hex()
    with pytest.raises(RpcError, match="Block not found"):
        await client.getblockheader("ab" * 32)


async def test_pool_node_reads_no_large_body_before_auth_and_bounds_large_bodies_together(
        pool_node: tuple[PoolNode, NodeRpcServer, NodeRpcClient]) -> None:
    """Attack: headers claiming a 32 MiB body (submitblock's limit), then the body, on many connections. The
    server read every body before checking the credentials: 20 unauthenticated connections took mos pool from
    106 to 747 MB. Now credentials come first (401 after the headers), and large bodies of authenticated
    clients share one budget: beyond it, 503 at once instead of buffering."""
    _node, server, client = pool_node
    head = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n" % (32 << 20)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + b"\r\n")  # no credentials: answered from the headers, the body never read
    assert b"401" in await asyncio.wait_for(reader.read(1 << 16), 30)
    writer.close()
    server.budget = budget = ByteBudget(40 << 20)
    auth = b"Authorization: Basic dTpw\r\n"
    _, first_w = await asyncio.open_connection("127.0.0.1", server.port)
    first_w.write(head + auth + b"\r\n" + bytes(1 << 20))  # a first large body arrives slowly
    await wait_for(lambda: budget.in_use == 32 << 20, 30, "the first large body being read")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + auth + b"\r\n")
    assert b"503" in await asyncio.wait_for(reader.read(1 << 16), 30)  # its body would exceed the budget
    writer.close()
    assert await client.getblockcount() == 0  # small requests still served meanwhile
    first_w.close()
    await wait_for(lambda: budget.in_use == 0, 30, "the budget given back")


async def test_pool_node_refuses_hostile_requests(pool_node: tuple[PoolNode, NodeRpcServer, NodeRpcClient]) -> None:
    _node, server, client = pool_node

    async def raw(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(data)
        await writer.drain()
        out = await asyncio.wait_for(reader.read(1 << 16), 10)
        writer.close()
        return out

    auth = "Authorization: Basic dTpw\r\n"
    assert b"413" in (await raw(b"POST / HTTP/1.1\r\nContent-Length: 999999999\r\n" + auth.encode() + b"\r\n"))
    assert b"401" in (await raw(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"))
    nested = b"[" * 100_000 + b"]" * 100_000
    out = await raw(f"POST / HTTP/1.1\r\nContent-Length: {len(nested)}\r\n{auth}\r\n".encode() + nested)
    assert b"Parse error" in out
    for body, code in [(b'{"method": "stop"}', b"-32601"), (b'{"method": "getblocktemplate", "params": [{}]}', b"-8"),
                       (b'{"method": "submitblock", "params": ["zz"]}', b"-22"),
                       (b'{"method": "getblock", "params": ["00", 1]}', b"-8"), (b"[1, 2]", b"-32600"),
                       (b'{"method": "getblockheader", "params": ["00"]}', b"-8"),
                       (b'{"method": "getblockheader", "params": ["' + b"00" * 32 + b'", 1]}', b"-8"),
                       (b'{"id": ' + b"[" * 300 + b"]" * 300 + b', "method": "getblockcount"}', b"-32600"),
                       (b'{"id": 1e400, "method": "getblockcount"}', b"-32700")]:
        out = await raw(f"POST / HTTP/1.1\r\nContent-Length: {len(body)}\r\n{auth}\r\n".encode() + body)
        assert code in out, (body, out)
    assert await client.submitblock("00" * 81) is not None  # garbage block: a reason, not a crash
    assert await client.getblockcount() == 0  # still serving
    # A Content-Length of 400 digits is refused without being repeated back.
    out = await raw(b"POST / HTTP/1.1\r\nContent-Length: 1" + b"0" * 400 + b"\r\n" + auth.encode() + b"\r\n")
    assert b"413" in out and b"0" * 50 not in out
    bad_client = NodeRpcClient("127.0.0.1", server.port, "u", "wrong")
    with pytest.raises(RpcError, match="credentials"):
        await bad_client.getblockcount()
    await bad_client.close()
