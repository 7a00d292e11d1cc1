"""Miner-built templates (Job Declaration), measured on loopback in one process.

1. New block -> new jobs downstream: a block is submitted to the node (``mos pool``'s chain as a JSON-RPC
   node, mempool of N synthetic transactions); we time, per block, until *every* Stratum V1 miner behind
   ``mos jd`` has a ``mining.notify`` for the new tip (first job), and until every one has the job with the
   full template's transactions. ``mos jd`` has to notice the tip (polling ``getbestblockhash``); it sends an
   empty-block job built from its previous template and the block's header, then fetches and checks
   ``getblocktemplate`` (only transactions it has not seen are hashed), applies its policy, builds the
   coinbase and notifies its miners again (optimistic mining: the JDS declarations and ``SetCustomMiningJob``
   follow; the next block waits for them, as real blocks are minutes apart). Compared, same run, same
   blocks: "before" -- ``mos jd`` without the empty-block job and without its transaction cache (the
   previous behaviour, but with this version's JSON codec); and miners connected straight to the pool,
   which pushes its own jobs the moment its chain moves (the floor: no template of one's own). Median and
   p90 over many blocks.
2. Template build time with a 4,000-transaction mempool: ``getblocktemplate`` over HTTP + parse and check
   every transaction (txid/wtxid recomputed) + policy + coinbase/merkle/witness commitment; also without
   the full parse (wtxid hash check only, ``mos jd``'s default) and unchecked. Baseline: the bare
   ``getblocktemplate`` call (HTTP + JSON decode).

Usage: python benchmarks/jd.py [--blocks 40] [--miners 4] [--mempool 4000] [--builds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

from rich.progress import track

from openmos.bitcoin import BlockHeader, merkle_root_from_branch, sha256d
from openmos.bitcoin.hashing import Midstate
from openmos.bitcoin.tx import serialize_block
from openmos.jd.service import JdService
from openmos.node import NodeRpcClient, NodeTemplate, TemplatePolicy, select_transactions
from openmos.node.template import build_work
from openmos.pool import LocalPool, PoolSettings
from openmos.pool.jds import JdsServer, JobDeclarator
from openmos.pool.node_rpc import NodeRpcServer, PoolNode, SyntheticMempool
from openmos.pool.sv2 import Sv2PoolServer, generate_authority_key
from openmos.stratum.v2.noise import KeyPair


class V1Miner:
    """A Stratum V1 miner that only listens: records when each new prevhash arrives."""

    def __init__(self) -> None:
        self.prev = ""
        self.changed = asyncio.Event()
        self.full = asyncio.Event()  # a job on the current prev hash with transactions (a merkle branch)
        self.at = 0.0
        self.full_at = 0.0

    async def run(self, port: int, user: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        writer.write(b'{"id":1,"method":"mining.subscribe","params":["bench"]}\n'
                     + f'{{"id":2,"method":"mining.authorize","params":["{user}","x"]}}\n'.encode())
        await writer.drain()
        while line := await reader.readline():
            msg = json.loads(line)
            if msg.get("method") != "mining.notify":
                continue
            now = time.perf_counter()
            if msg["params"][1] != self.prev:
                self.prev = msg["params"][1]
                self.at = now
                self.changed.set()
            if msg["params"][4] and not self.full.is_set():
                self.full_at = now
                self.full.set()


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def make_block(node: PoolNode, payout: bytes) -> bytes:
    from openmos.bitcoin.tx import TxOut

    template = NodeTemplate.from_rpc(node.template(), verify=False)
    sel = select_transactions(template, TemplatePolicy())
    work = build_work(template, sel, [TxOut(0, payout)], 12, b"/bench/")
    en = bytes(12)
    root = merkle_root_from_branch(sha256d(work.coinbase.stripped(en)), work.merkle_path)
    header = BlockHeader(template.version, template.prev_hash, root, template.curtime, template.bits, 0)
    nonce, _ = next(Midstate.of(header.serialize()[:64]).scan(header.tail12(), range(1 << 32), template.target))
    return serialize_block(header.with_nonce(nonce).serialize(), [work.coinbase.full(en)]
                           + [t.data for t in sel.txs])


Latencies = dict[str, list[float]]


async def latency(blocks: int, miners: int, mempool: int, *, improved: bool) -> tuple[Latencies, JdService]:
    pool = LocalPool(PoolSettings(port=0, start_difficulty=1.0, vardiff=None, network_difficulty=0.000001,
                                  extranonce2_size=8, job_interval=3600.0))
    await pool.start()
    node = PoolNode(pool.chain, SyntheticMempool(), refill=mempool)
    t0 = [0.0]

    def announce() -> None:
        t0[0] = time.perf_counter()
        pool.new_tip()

    node.on_new_tip = announce
    rpc = NodeRpcServer(node)
    await rpc.start()
    secret, _ = generate_authority_key()
    decl = JobDeclarator(node, pool.chain.payout_script)
    v2 = Sv2PoolServer(pool, secret, declarator=decl)
    jds = JdsServer(decl, secret)
    await v2.start()
    await jds.start()
    svc = JdService(NodeRpcClient("127.0.0.1", rpc.port), "127.0.0.1", v2.port, "127.0.0.1", jds.port,
                    KeyPair.from_secret(secret).xonly, "bench.jd",
                    downstream=PoolSettings(port=0, start_difficulty=1.0, vardiff=None), poll_interval=0.01,
                    empty_jobs=improved, cache_txs=improved)
    await svc.start()
    behind_jd = [V1Miner() for _ in range(miners)]
    direct = [V1Miner() for _ in range(miners)]
    tasks = [asyncio.create_task(m.run(svc.downstream.port, f"m{i}")) for i, m in enumerate(behind_jd)]  # type: ignore[union-attr]
    tasks += [asyncio.create_task(m.run(pool.port, f"d{i}")) for i, m in enumerate(direct)]
    while not all(m.prev for m in behind_jd + direct):
        await asyncio.sleep(0.05)
    lat: Latencies = {"first": [], "full": [], "pool": []}
    label = "after: empty-block job + tx cache" if improved else "before: full template only"
    for _ in track(range(blocks), description=f"blocks, {label} ({mempool} tx mempool)"):
        raw = await make_block(node, b"\x51")
        for m in behind_jd + direct:
            m.changed.clear()
            m.full.clear()
        assert node.submit(raw) is None
        await asyncio.wait_for(asyncio.gather(*(m.changed.wait() for m in behind_jd + direct)), 30)
        await asyncio.wait_for(asyncio.gather(*(m.full.wait() for m in behind_jd)), 30)
        lat["first"].append(max(m.at for m in behind_jd) - t0[0])
        lat["full"].append(max(m.full_at for m in behind_jd) - t0[0])
        lat["pool"].append(max(m.at for m in direct) - t0[0])
        # Real blocks are minutes apart: let the declaration round trip and the token prefetch finish.
        while svc.source.current is None or svc.upstream_of[svc.source.current].job_id is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    assert svc.status.mode == "own", svc.status.reason
    await svc.stop()
    await jds.stop()
    await v2.stop()
    await rpc.stop()
    await pool.stop()
    return lat, svc


async def build_times(mempool: int, builds: int) -> dict[str, list[float]]:
    from openmos.bitcoin.tx import TxOut
    from openmos.pool.chain import TemplateChain

    node = PoolNode(TemplateChain(), SyntheticMempool(), refill=mempool)
    rpc = NodeRpcServer(node)
    await rpc.start()
    client = NodeRpcClient("127.0.0.1", rpc.port)
    out: dict[str, list[float]] = {"gbt only (baseline)": [], "build, full tx check": [],
                                   "build, hash check": [], "build, unchecked": []}
    for _ in track(range(builds), description="template builds"):
        t = time.perf_counter()
        await client.getblocktemplate()
        out["gbt only (baseline)"].append(time.perf_counter() - t)
        modes: tuple[tuple[str, bool | str], ...] = (("build, full tx check", True), ("build, hash check", "hash"),
                                                     ("build, unchecked", False))
        for key, verify in modes:
            t = time.perf_counter()
            template = NodeTemplate.from_rpc(await client.getblocktemplate(), verify=verify)
            sel = select_transactions(template, TemplatePolicy(min_fee_rate=5.0))
            build_work(template, sel, [TxOut(0, b"\x51")], 12)
            out[key].append(time.perf_counter() - t)
    assert len(template.transactions) == mempool
    await client.close()
    await rpc.stop()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=40)
    ap.add_argument("--miners", type=int, default=4)
    ap.add_argument("--mempool", type=int, default=4000)
    ap.add_argument("--builds", type=int, default=20)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (everything runs in this "
          f"one process: node, pool, JDS, mos jd and the miners)")
    before, _ = await latency(args.blocks, args.miners, args.mempool, improved=False)
    after, svc = await latency(args.blocks, args.miners, args.mempool, improved=True)
    times = await build_times(args.mempool, args.builds)
    base = statistics.median(times["gbt only (baseline)"])
    ms = 1000.0

    def row(label: str, values: list[float]) -> None:
        med = statistics.median(values)
        print(f"   {label:<44} median {med * ms:7.1f} ms   p90 {percentile(values, 0.9) * ms:7.1f} ms   "
              f"{med / base:5.2f}x a bare getblocktemplate")

    print(f"\n1. new block on the node -> new job on all {args.miners} miners ({args.blocks} blocks each, "
          f"{args.mempool}-tx mempool, loopback; goal: median < 200 ms)")
    print(f"   baseline: a bare getblocktemplate call (HTTP + JSON decode) takes {base * ms:.1f} ms (median)")
    row("before: mos jd, full template (first job)", before["first"])
    row("after: mos jd, empty-block job (first job)", after["first"])
    row("after: mos jd, full template job", after["full"])
    row("straight to the pool (its own jobs)", after["pool"] + before["pool"])
    print(f"   first job: {statistics.median(before['first']) / statistics.median(after['first']):.1f}x sooner than "
          f"before; full template job: {statistics.median(after['full']) / statistics.median(before['first']):.2f}x "
          f"the time it took before;\n   {svc.status.empty_jobs} empty-block jobs, last own template "
          f"{svc.status.tx_count} txs built in "
          f"{(svc.status.build_seconds or 0) * ms:.1f} ms; tx cache {svc.tx_cache.hits if svc.tx_cache else 0} "
          f"hits / {svc.tx_cache.misses if svc.tx_cache else 0} misses")
    print(f"\n2. template build with a {args.mempool}-transaction mempool ({args.builds} runs, median)")
    for key, values in times.items():
        med = statistics.median(values)
        print(f"   {key:<22} {med * ms:7.1f} ms   {med / base:4.2f}x baseline")


if __name__ == "__main__":
    asyncio.run(main())
