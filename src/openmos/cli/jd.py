"""Miner-built templates on the command line: ``mos pool --rpc-port`` (the pool's chain as a Bitcoin Core
JSON-RPC node with a synthetic mempool) and ``mos pool --jds-port`` (its Job Declarator Server)."""

from __future__ import annotations

import argparse
import contextlib
import logging
from dataclasses import dataclass

from openmos.pool.jds import JdsServer, JobDeclarator
from openmos.pool.node_rpc import NodeRpcServer, PoolNode, SyntheticMempool
from openmos.pool.server import LocalPool
from openmos.pool.sv2 import Sv2PoolServer

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
    g.add_argument("--jds-port", type=int, default=None,
                   help="serve the Stratum V2 Job Declaration Protocol on this port (needs --sv2-port; same "
                        "authority key) and accept custom jobs (SetCustomMiningJob) on extended channels")


@dataclass
class PoolServices:
    rpc: NodeRpcServer | None = None
    jds: JdsServer | None = None

    async def stop(self) -> None:
        for server in (self.jds, self.rpc):
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.stop()


async def start_pool_services(pool: LocalPool, v2: Sv2PoolServer | None, args: argparse.Namespace) -> PoolServices:
    """The node RPC and the JDS beside a running pool, as the options ask."""
    services = PoolServices()
    if args.rpc_port is None and args.jds_port is None:
        return services
    if not 0 <= args.mempool_txs <= 50_000:
        raise ValueError("--mempool-txs must be between 0 and 50000")
    node = PoolNode(pool.chain, SyntheticMempool(), on_new_tip=pool.new_tip, refill=args.mempool_txs)
    if args.rpc_port is not None:
        services.rpc = NodeRpcServer(node, host=pool.settings.host, port=args.rpc_port, user=args.rpc_user,
                                     password=args.rpc_password)
        await services.rpc.start()
        log.info("node JSON-RPC for the local chain: %s (%d synthetic mempool transactions)", services.rpc.url,
                 len(node.mempool.txs))
    if args.jds_port is not None:
        if v2 is None:
            raise ValueError("--jds-port needs --sv2-port: custom jobs are mined on Stratum V2 extended channels")
        declarator = JobDeclarator(node, pool.chain.payout_script)
        v2.declarator = declarator
        services.jds = JdsServer(declarator, v2.authority.secret, host=pool.settings.host, port=args.jds_port)
        await services.jds.start()
        log.info("job declarator server: %s:%d (authority %s)", pool.settings.host, services.jds.port,
                 v2.authority_key)
    return services
