"""Miner-built templates on the command line: ``mos pool --rpc-port`` (the pool's chain as a Bitcoin Core
JSON-RPC node with a synthetic mempool)."""

from __future__ import annotations

import argparse
import logging

from openmos.pool.node_rpc import NodeRpcServer, PoolNode, SyntheticMempool
from openmos.pool.server import LocalPool

log = logging.getLogger(__name__)


def add_pool_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("node JSON-RPC (so a Job Declarator Client can build its own templates "
                                  "offline)")
    g.add_argument("--rpc-port", type=int, default=None,
                   help="serve getblocktemplate/submitblock/getbestblockhash/getblockcount/getblock for the "
                        "pool's local chain on this port (0 = any free port)")
    g.add_argument("--rpc-user", default="", help="Basic-auth user the RPC requires (default: none)")
    g.add_argument("--rpc-password", default="", help="Basic-auth password the RPC requires")
    g.add_argument("--mempool-txs", type=int, default=200, metavar="N",
                   help="keep N synthetic (regtest-like, never broadcast) transactions in the mempool "
                        "(default: %(default)s)")


async def start_pool_node(pool: LocalPool, args: argparse.Namespace) -> NodeRpcServer | None:
    if args.rpc_port is None:
        return None
    if not 0 <= args.mempool_txs <= 50_000:
        raise ValueError("--mempool-txs must be between 0 and 50000")
    node = PoolNode(pool.chain, SyntheticMempool(), on_new_tip=pool.new_tip, refill=args.mempool_txs)
    server = NodeRpcServer(node, host=pool.settings.host, port=args.rpc_port, user=args.rpc_user,
                           password=args.rpc_password)
    await server.start()
    log.info("node JSON-RPC for the local chain: %s (%d synthetic mempool transactions)", server.url,
             len(node.mempool.txs))
    return server
