"""``mos jd`` taking its templates from a V2 Template Provider (``mos pool --tp-port``) instead of the node's
JSON-RPC: a CPU miner mines them through the JDC, the JDS accepts the declarations, a found block lands with
the provider's transaction set (also sent back as SubmitSolution); provider down -> the pool's jobs ->
back to provider templates. A policy with a template provider is refused (TDP has no per-tx fees)."""

from __future__ import annotations

import pytest

from openmos.hw.cpu import CpuHardware, CpuSettings
from openmos.jd.service import JdService
from openmos.jd.tdp import TdpNode
from openmos.miner import AgentConfig, MiningAgent
from openmos.node import TemplatePolicy
from openmos.pool import LocalPool
from openmos.pool.jds import JdsServer, JobDeclarator
from openmos.pool.node_rpc import PoolNode, SyntheticMempool
from openmos.pool.sv2 import Sv2PoolServer, generate_authority_key
from openmos.pool.tp import TemplateProvider
from openmos.stratum.v2.noise import KeyPair

from helpers import easy_pool_settings, wait_for

SHARE_DIFF = 0.00005
NET_DIFF = 0.0001


async def test_jd_mines_template_provider_templates_and_falls_back() -> None:
    pool = LocalPool(easy_pool_settings(start_difficulty=SHARE_DIFF, network_difficulty=NET_DIFF,
                                        extranonce2_size=8))
    await pool.start()
    node = PoolNode(pool.chain, SyntheticMempool(), on_new_tip=pool.new_tip, refill=40)
    secret, _ = generate_authority_key()
    authority = KeyPair.from_secret(secret).xonly
    decl = JobDeclarator(node, pool.chain.payout_script)
    v2 = Sv2PoolServer(pool, secret, declarator=decl)
    jds = JdsServer(decl, secret)
    tp = TemplateProvider(node, secret)
    for server in (v2, jds, tp):
        await server.start()
    with pytest.raises(ValueError, match="template provider"):
        JdService(TdpNode("127.0.0.1", tp.port, authority), "127.0.0.1", v2.port, "127.0.0.1", jds.port, authority,
                  "x", policy=TemplatePolicy(min_fee_rate=5.0))
    source = TdpNode("127.0.0.1", tp.port, authority, timeout=5.0)
    svc = JdService(source, "127.0.0.1", v2.port, "127.0.0.1", jds.port, authority, "jd.tdp",
                    downstream=easy_pool_settings(start_difficulty=SHARE_DIFF), retry=0.5)
    await svc.start()
    # Shares at the pool's share difficulty, below the network's: a hashrate-derived suggestion would make
    # every share a block here.
    agent = MiningAgent(AgentConfig.from_dict({"hardware": "cpu:1", "stratum": {"suggest_difficulty": SHARE_DIFF},
                                               "groups": [{"pools": [{"url": svc.url, "user": "tdp.rig1"}]}]}),
                        CpuHardware(CpuSettings(workers=1)))
    await agent.start()
    try:
        assert svc.status.mode == "own" and svc.status.tx_count == 40  # the provider's whole template
        await wait_for(lambda: pool.workers.get("jd.tdp") is not None and pool.workers["jd.tdp"].accepted >= 2,
                       120, "shares on the provider's template accepted by the pool")
        await wait_for(lambda: any(b.hash() in node.blocks for b in pool.chain.blocks), 300,
                       "a block from a provider template")
        block_hash = next(b.hash() for b in pool.chain.blocks if b.hash() in node.blocks)
        assert node.getblock(block_hash, 1)["nTx"] == 41  # coinbase + the provider's 40 transactions
        await wait_for(lambda: source.solutions >= 1, 60, "SubmitSolution sent to the provider")
        assert set(decl.rejected) <= {"invalid-coinbase-height"}, decl.rejected  # (only a block-arrived race)
        # Provider down: the pool's jobs; back: provider templates again, nothing rejected upstream.
        port = tp.port
        await tp.stop()
        await wait_for(lambda: svc.status.mode == "pool", 120, "fallback to the pool's jobs")
        tp.port = port
        await tp.start()
        await wait_for(lambda: svc.status.mode == "own", 180, "back to the provider's templates")
        before = pool.workers["jd.tdp"].accepted
        await wait_for(lambda: pool.workers["jd.tdp"].accepted >= before + 2, 120, "shares on provider templates")
        assert svc.mining.rejected == {}, svc.mining.rejected
    finally:
        await agent.stop()
        await svc.stop()
        for server in (tp, jds, v2):
            await server.stop()
        await pool.stop()
