"""Job Declarator Server in ``mos pool``: a miner declares its own template, mines it on an extended
channel through SetCustomMiningJob, shares count like pool shares, a block lands with the miner's
transactions; hostile declarations and custom jobs are refused with the spec error codes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from openmos.bitcoin import BlockHeader, difficulty_to_target, merkle_root_from_branch, sha256d
from openmos.bitcoin.hashing import Midstate
from openmos.bitcoin.tx import Transaction, TxIn, TxOut, synthetic_tx
from openmos.jd import DeclarationFailed, JdsClient, MiningUpstream
from openmos.node.template import (
    NodeTemplate,
    Selection,
    TemplatePolicy,
    TemplateTx,
    Work,
    build_work,
    select_transactions,
)
from openmos.pool import LocalPool
from openmos.pool.jds import JdsServer, JobDeclarator
from openmos.pool.node_rpc import PoolNode, SyntheticMempool
from openmos.pool.sv2 import Sv2PoolServer, generate_authority_key
from openmos.stratum.v2.job_declaration import (
    AllocateMiningJobToken,
    DeclareMiningJob,
    DeclareMiningJobError,
    ProvideMissingTransactionsSuccess,
)
from openmos.stratum.v2.noise import KeyPair
from openmos.stratum.v2.transport import open_connection

from helpers import easy_pool_settings, wait_for

SHARE_DIFF = 0.00002
NET_DIFF = 0.0001


@dataclass
class Rig:
    pool: LocalPool
    node: PoolNode
    declarator: JobDeclarator
    v2: Sv2PoolServer
    jds: JdsServer
    authority: bytes


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    pool = LocalPool(easy_pool_settings(start_difficulty=SHARE_DIFF, network_difficulty=NET_DIFF))
    await pool.start()
    node = PoolNode(pool.chain, SyntheticMempool(), on_new_tip=pool.new_tip, refill=30)
    decl = JobDeclarator(node, pool.chain.payout_script)
    secret, _ = generate_authority_key()
    v2 = Sv2PoolServer(pool, secret, declarator=decl)
    jds = JdsServer(decl, secret)
    await v2.start()
    await jds.start()
    yield Rig(pool, node, decl, v2, jds, KeyPair.from_secret(secret).xonly)
    await jds.stop()
    await v2.stop()
    await pool.stop()


async def connect(rig: Rig, user: str = "jdc.rig") -> tuple[JdsClient, MiningUpstream]:
    jdc = JdsClient("127.0.0.1", rig.jds.port, rig.authority, user)
    await jdc.connect()
    mining = MiningUpstream("127.0.0.1", rig.v2.port, rig.authority, user)
    await mining.connect()
    return jdc, mining


def own_work(rig: Rig, mining: MiningUpstream, pool_outputs: tuple[TxOut, ...], policy: TemplatePolicy) -> Work:
    template = NodeTemplate.from_rpc(rig.node.template())
    sel = select_transactions(template, policy)
    return build_work(template, sel, pool_outputs, len(mining.extranonce_prefix) + mining.extranonce_size, b"/j/")


def mine(work: Work, prefix: bytes, en2: bytes, target: int, version: int = 0x20000000) -> BlockHeader:
    coinbase = work.coinbase.stripped(prefix + en2)
    root = merkle_root_from_branch(sha256d(coinbase), work.merkle_path)
    header = BlockHeader(version, work.template.prev_hash, root, int(time.time()), work.template.bits, 0)
    nonce, _ = next(Midstate.of(header.serialize()[:64]).scan(header.tail12(), range(1 << 32), target))
    return header.with_nonce(nonce)


async def test_declared_job_mined_on_extended_channel_lands_with_miner_transactions(rig: Rig) -> None:
    jdc, mining = await connect(rig)
    token = await jdc.allocate()
    assert token.pool_outputs[0].script == rig.pool.chain.payout_script
    # The miner's policy: nothing under 40 sat/vB. One chosen transaction the pool has never seen
    # (dropped from its mempool) must be asked for and supplied; the pool cannot verify its fee (it spends
    # outputs the pool does not know), so the miner does not claim it.
    work = own_work(rig, mining, token.pool_outputs, TemplatePolicy(min_fee_rate=40.0))
    assert 0 < len(work.selection.txs) < 30
    unknown = work.selection.txs[0]
    rig.node.mempool.remove([unknown.txid])
    sel = work.selection
    work = build_work(work.template, Selection(sel.txs, sel.fees - unknown.fee, sel.weight, sel.excluded),
                      token.pool_outputs, len(mining.extranonce_prefix) + mining.extranonce_size, b"/j/")
    new_token = await jdc.declare(token.token, work)
    assert rig.declarator.accepted == 1 and work.selection.txs[0].txid in rig.node.mempool.txs
    job_id = await mining.set_custom_job(new_token, work, work.template.curtime)
    # A share (not a block) is accounted like any pool share.
    share_target = difficulty_to_target(SHARE_DIFF)
    block_target = work.template.target
    en2 = bytes(mining.extranonce_size)
    header = None
    for i in range(1000):
        en2 = i.to_bytes(mining.extranonce_size, "big")
        header = mine(work, mining.extranonce_prefix, en2, share_target)
        if int.from_bytes(header.hash(), "little") > block_target:
            break
    assert header is not None
    mining.submit(job_id, header.nonce, header.ntime, header.version, en2)
    await wait_for(lambda: mining.accepted == 1, 20, "share on the custom job accepted")
    assert rig.pool.workers["jdc.rig"].accepted == 1 and rig.pool.chain.height == 1
    # Then a block.
    en2 = b"\xff" * mining.extranonce_size
    block = mine(work, mining.extranonce_prefix, en2, block_target)
    mining.submit(job_id, block.nonce, block.ntime, block.version, en2)
    await wait_for(lambda: rig.pool.chain.height == 2, 20, "block from the custom job")
    info = rig.node.getblock(block.hash(), 1)
    assert info["nTx"] == 1 + len(work.selection.txs)
    assert [bytes.fromhex(t)[::-1] for t in info["tx"][1:]] == list(work.txids)
    assert rig.pool.workers["jdc.rig"].blocks == 1
    # The job is now stale: the pool refuses it for the old tip.
    with pytest.raises(DeclarationFailed, match="invalid-prev-hash"):
        await mining.set_custom_job(new_token, work, work.template.curtime)
    await jdc.close()
    await mining.close()


async def test_push_solution_makes_the_jds_submit_the_block(rig: Rig) -> None:
    jdc, mining = await connect(rig)
    token = await jdc.allocate()
    work = own_work(rig, mining, token.pool_outputs, TemplatePolicy())
    await jdc.declare(token.token, work)
    en = mining.extranonce_prefix + bytes(mining.extranonce_size)
    block = mine(work, mining.extranonce_prefix, bytes(mining.extranonce_size), work.template.target)
    await jdc.push_solution(en, block.prev_hash, block.nonce, block.ntime, block.bits, block.version)
    await wait_for(lambda: rig.jds.solutions == [None], 20, "PushSolution accepted")
    assert rig.pool.chain.tip == block.hash()
    await jdc.close()
    await mining.close()


async def test_a_template_omitting_the_pool_output_is_refused(rig: Rig) -> None:
    jdc, mining = await connect(rig)
    token = await jdc.allocate()
    thief = (TxOut(0, bytes.fromhex("0014") + b"\x66" * 20),)
    work = own_work(rig, mining, thief, TemplatePolicy())
    with pytest.raises(DeclarationFailed, match="missing-pool-payout"):
        await jdc.declare(token.token, work)
    with pytest.raises(DeclarationFailed, match="invalid-mining-job-token"):  # a token is good for one declaration
        await jdc.declare(token.token, own_work(rig, mining, token.pool_outputs, TemplatePolicy()))
    with pytest.raises(DeclarationFailed, match="invalid-mining-job-token"):
        await jdc.declare(b"forged", own_work(rig, mining, token.pool_outputs, TemplatePolicy()))
    stale = own_work(rig, mining, token.pool_outputs, TemplatePolicy())
    wrong_height = build_work(replace(stale.template, height=stale.template.height + 5), stale.selection,
                              token.pool_outputs, len(mining.extranonce_prefix) + mining.extranonce_size)
    with pytest.raises(DeclarationFailed, match="invalid-coinbase-height"):
        await jdc.declare((await jdc.allocate()).token, wrong_height)
    assert rig.declarator.accepted == 0
    await jdc.close()
    await mining.close()


async def test_custom_jobs_that_differ_from_the_declaration_are_refused(rig: Rig) -> None:
    jdc, mining = await connect(rig)
    token = await jdc.allocate()
    work = own_work(rig, mining, token.pool_outputs, TemplatePolicy())
    new_token = await jdc.declare(token.token, work)
    greedy_outputs = (TxOut(work.outputs[0].value, bytes.fromhex("0014") + b"\x66" * 20), *work.outputs[1:])
    tampered = replace(work, outputs=greedy_outputs)
    with pytest.raises(DeclarationFailed, match="invalid-coinbase"):
        await mining.set_custom_job(new_token, tampered, work.template.curtime)
    fewer = replace(work, merkle_path=work.merkle_path[:-1])
    with pytest.raises(DeclarationFailed, match="invalid-merkle-path"):
        await mining.set_custom_job(new_token, fewer, work.template.curtime)
    with pytest.raises(DeclarationFailed, match="invalid-mining-job-token"):
        await mining.set_custom_job(token.token, work, work.template.curtime)  # the undeclared token
    assert await mining.set_custom_job(new_token, work, work.template.curtime) > 0
    await jdc.close()
    await mining.close()


async def test_bogus_supplied_transactions_and_garbage_frames(rig: Rig) -> None:
    decl = rig.declarator
    from openmos.stratum.v2.job_declaration import AllocateMiningJobToken

    token = decl.allocate(AllocateMiningJobToken("x", 1)).mining_job_token
    template = NodeTemplate.from_rpc(rig.node.template())
    foreign = synthetic_tx(b"not in the pool mempool")
    ftx = TemplateTx(foreign.serialize(), foreign.txid(), foreign.wtxid(), 500, foreign.weight(), ())
    sel = select_transactions(replace(template, transactions=(*template.transactions, ftx),
                                      coinbase_value=template.coinbase_value + 500), TemplatePolicy())
    work = build_work(template, sel, decl.pool_outputs, 12)
    msg = DeclareMiningJob(7, token, template.version, work.coinbase.prefix, work.coinbase.suffix, work.wtxids, b"")
    reply, pending = decl.declare(msg)
    assert pending is not None and list(reply.unknown_tx_position_list) == [len(sel.txs) - 1]  # type: ignore[attr-defined]
    bad = decl.provide(pending, ProvideMissingTransactionsSuccess(7, (synthetic_tx(b"other").serialize(),)))
    assert isinstance(bad, DeclareMiningJobError) and bad.error_code == "invalid-transaction"
    # Garbage after the handshake: the JDS closes that connection and keeps serving others.
    conn = await open_connection("127.0.0.1", rig.jds.port, rig.authority)
    conn.writer.write(b"\x00" * 4000)
    await asyncio.wait_for(conn.reader.read(), 20)
    await conn.close()
    jdc, mining = await connect(rig)
    assert (await jdc.allocate()).token
    await jdc.close()
    await mining.close()


def test_coinbase_value_counts_only_fees_the_pool_can_verify(rig: Rig) -> None:
    """Attack: a JDC supplies transactions the pool does not know and pays itself their claimed fees. The JDS
    credits a supplied transaction's fee only when it knows the outputs it spends (its mempool, or earlier
    transactions of the same job): otherwise 0, and a coinbase claiming more is refused with the reason."""
    decl = rig.declarator
    template = NodeTemplate.from_rpc(rig.node.template())
    rid = iter(range(100, 200))

    def declare(extra: tuple[TemplateTx, ...], claimed: int) -> object:
        t = replace(template, transactions=(*template.transactions, *extra),
                    coinbase_value=template.coinbase_value + claimed)
        work = build_work(t, select_transactions(t, TemplatePolicy()), decl.pool_outputs, 12)
        token = decl.allocate(AllocateMiningJobToken("x", 1)).mining_job_token
        r = next(rid)
        reply, pending = decl.declare(DeclareMiningJob(r, token, t.version, work.coinbase.prefix,
                                                       work.coinbase.suffix, work.wtxids, b""))
        if pending is None:
            return reply
        return decl.provide(pending, ProvideMissingTransactionsSuccess(r, tuple(x.data for x in extra)))

    foreign = synthetic_tx(b"spends outputs the pool never saw")
    ftx = TemplateTx(foreign.serialize(), foreign.txid(), foreign.wtxid(), 5000, foreign.weight(), ())
    refused = declare((ftx,), 5000)
    assert isinstance(refused, DeclareMiningJobError) and refused.error_code == "invalid-coinbase-value"
    assert b"cannot be verified" in refused.error_details
    assert foreign.txid() not in rig.node.mempool.txs  # a refused job's transactions do not join the mempool
    assert not isinstance(declare((ftx._replace(fee=0),), 0), DeclareMiningJobError)  # not claiming it: fine
    # A supplied child of a mempool transaction: the pool knows what it spends, so its fee is verifiable.
    parent_index = 0
    parent = template.transactions[parent_index]
    spent = parent.tx().outputs[0].value
    child = Transaction(2, (TxIn(parent.txid + bytes(4), b"", 0xFFFFFFFD),), (TxOut(spent - 300, b"\x51"),),
                        ((b"\x01",),), 0)
    ctx = TemplateTx(child.serialize(), child.txid(), child.wtxid(), 300, child.weight(), (parent_index,))
    over = declare((ctx,), 301)
    assert isinstance(over, DeclareMiningJobError) and over.error_code == "invalid-coinbase-value"
    assert b"cannot be verified" not in over.error_details
    assert not isinstance(declare((ctx,), 300), DeclareMiningJobError)
    # Spending a missing output, or more than its inputs hold: refused as invalid transactions.
    for outputs, prevout_index in (((TxOut(spent - 300, b"\x51"),), 7), ((TxOut(spent + 1, b"\x51"),), 0)):
        bad = Transaction(2, (TxIn(parent.txid + prevout_index.to_bytes(4, "little"), b"", 0xFFFFFFFD),), outputs,
                          ((b"\x02",),), 0)
        btx = TemplateTx(bad.serialize(), bad.txid(), bad.wtxid(), 0, bad.weight(), (parent_index,))
        out = declare((btx,), 0)
        assert isinstance(out, DeclareMiningJobError) and out.error_code == "invalid-transaction", out
