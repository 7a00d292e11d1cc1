"""Template Distribution Protocol: ``mos pool``'s template provider and the TDP client, end to end on
loopback: templates pushed, transaction data requested, a solution submitted becomes a block."""

from __future__ import annotations

import asyncio
import time

import pytest

from openmos.bitcoin import BlockHeader, merkle_root_from_branch, sha256d
from openmos.bitcoin.hashing import Midstate
from openmos.bitcoin.merkle import merkle_branches
from openmos.bitcoin.tx import TxOut, compact_size, parse_outputs, parse_tx, split_coinbase_tx
from openmos.jd.client import DeclarationFailed
from openmos.jd.tdp import TdpClient
from openmos.pool.chain import TemplateChain
from openmos.pool.node_rpc import PoolNode, SyntheticMempool
from openmos.pool.sv2 import generate_authority_key
from openmos.pool.tp import TemplateProvider
from openmos.stratum.v2.codec import u256_to_int
from openmos.stratum.v2.messages import SetupConnection
from openmos.stratum.v2.noise import KeyPair
from openmos.stratum.v2.template_distribution import CoinbaseOutputConstraints
from openmos.stratum.v2.transport import open_connection

from helpers import wait_for

OUR_SCRIPT = bytes.fromhex("0014") + b"\x42" * 20


async def test_template_provider_round_trip() -> None:
    node = PoolNode(TemplateChain(network_difficulty=0.0001), SyntheticMempool(), refill=25)
    secret, _ = generate_authority_key()
    tp = TemplateProvider(node, secret)
    await tp.start()
    client = TdpClient("127.0.0.1", tp.port, KeyPair.from_secret(secret).xonly, max_additional_size=40)
    try:
        await client.connect()
        await asyncio.wait_for(client.changed.wait(), 20)
        tpl, prev = client.active, client.prev
        assert tpl is not None and prev is not None and prev.prev_hash == node.chain.tip
        txs = await client.request_transactions(tpl.template_id)
        assert len(txs) == 25
        assert tuple(merkle_branches([parse_tx(t).txid() for t in txs])) == tpl.merkle_path
        # Our coinbase: the provider's prefix (BIP34 height) + extranonce, our payout, then its outputs as is.
        theirs = parse_outputs(compact_size(tpl.coinbase_tx_outputs_count) + tpl.coinbase_tx_outputs)
        parts = split_coinbase_tx(tpl.coinbase_tx_version, tpl.coinbase_prefix, 8, tpl.coinbase_tx_input_sequence,
                                  [TxOut(tpl.coinbase_tx_value_remaining, OUR_SCRIPT), *theirs],
                                  tpl.coinbase_tx_locktime, segwit=True)
        en = bytes(8)
        root = merkle_root_from_branch(sha256d(parts.stripped(en)), tpl.merkle_path)
        header = BlockHeader(tpl.version, prev.prev_hash, root, prev.header_timestamp, prev.n_bits, 0)
        nonce, _ = next(Midstate.of(header.serialize()[:64]).scan(header.tail12(), range(1 << 32),
                                                                   u256_to_int(prev.target)))
        old_tip = node.chain.tip
        client.changed.clear()
        await client.submit_solution(tpl.template_id, tpl.version, header.ntime, nonce, parts.full(en))
        await wait_for(lambda: tp.solutions == [None], 20, "the solution accepted as a block")
        block = header.with_nonce(nonce).hash()
        assert node.chain.tip == block and len(node.getblock(block, 1)["tx"]) == 26
        # The provider pushes the next template at once; the old one is now stale.
        await asyncio.wait_for(client.changed.wait(), 20)
        assert client.prev is not None and client.prev.prev_hash == block != old_tip
        with pytest.raises(DeclarationFailed, match="stale-template-id"):
            await client.request_transactions(tpl.template_id)
        with pytest.raises(DeclarationFailed, match="template-id-not-found"):
            await client.request_transactions(10**9)
        assert tp.protocol_errors == 0
    finally:
        await client.close()
        await tp.stop()


async def test_template_provider_refuses_out_of_order_and_absurd_clients() -> None:
    node = PoolNode(TemplateChain(), SyntheticMempool(), refill=3)
    secret, _ = generate_authority_key()
    tp = TemplateProvider(node, secret)
    await tp.start()
    xonly = KeyPair.from_secret(secret).xonly
    try:
        for first in (CoinbaseOutputConstraints(10, 10), SetupConnection(0, 2, 2, 0, "", 0, "", "", "", "")):
            conn = await open_connection("127.0.0.1", tp.port, xonly)
            await conn.send(first)  # not a TDP SetupConnection: closed
            await asyncio.wait_for(conn.reader.read(), 20)
            await conn.close()
        conn = await open_connection("127.0.0.1", tp.port, xonly)
        await conn.send(SetupConnection(2, 2, 2, 0, "", 0, "", "", "", ""))
        await conn.send(CoinbaseOutputConstraints(10**9, 0))  # more coinbase space than a block has
        started = time.monotonic()
        await asyncio.wait_for(conn.reader.read(), 20)
        assert time.monotonic() - started < 20
        await conn.close()
        assert tp.protocol_errors >= 2 and not tp.connections
    finally:
        await tp.stop()
