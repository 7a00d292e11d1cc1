"""Miner-built templates on the command line: ``mos pool --rpc-port`` (the pool's chain as a Bitcoin Core
JSON-RPC node with a synthetic mempool), ``mos pool --jds-port`` (its Job Declarator Server) and ``mos jd``
(the Job Declarator Client)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from dataclasses import dataclass

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from openmos.cli.args import add_miner_port_args
from openmos.cli.display import serve
from openmos.jd.service import JdService
from openmos.jd.tdp import TdpNode
from openmos.node import NodeRpcClient, TemplatePolicy
from openmos.pool.jds import JdsServer, JobDeclarator
from openmos.pool.node_rpc import NodeRpcServer, PoolNode, SyntheticMempool
from openmos.pool.server import LocalPool, PoolSettings
from openmos.pool.sv2 import Sv2PoolServer
from openmos.pool.tp import TemplateProvider
from openmos.stratum.v2.url import Sv2PoolUrl

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
    g.add_argument("--tp-port", type=int, default=None,
                   help="serve the Stratum V2 Template Distribution Protocol for the local chain on this port "
                        "(needs --sv2-port; same authority key)")
    g.add_argument("--jds-port", type=int, default=None,
                   help="serve the Stratum V2 Job Declaration Protocol on this port (needs --sv2-port; same "
                        "authority key) and accept custom jobs (SetCustomMiningJob) on extended channels")


@dataclass
class PoolServices:
    rpc: NodeRpcServer | None = None
    jds: JdsServer | None = None
    tp: TemplateProvider | None = None

    async def stop(self) -> None:
        for server in (self.tp, self.jds, self.rpc):
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.stop()


async def start_pool_services(pool: LocalPool, v2: Sv2PoolServer | None, args: argparse.Namespace) -> PoolServices:
    """The node RPC, the JDS and the template provider beside a running pool, as the options ask."""
    services = PoolServices()
    if args.rpc_port is None and args.jds_port is None and args.tp_port is None:
        return services
    if not 0 <= args.mempool_txs <= 50_000:
        raise ValueError("--mempool-txs must be between 0 and 50000")
    node = PoolNode(pool.chain, SyntheticMempool(), on_new_tip=pool.new_tip, refill=args.mempool_txs)
    pool.job_listeners.append(lambda _job: node.sync_tip())  # blocks the pool finds from shares reach the TP too
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
    if args.tp_port is not None:
        if v2 is None:
            raise ValueError("--tp-port needs --sv2-port (the template provider uses the pool's authority key)")
        services.tp = TemplateProvider(node, v2.authority.secret, host=pool.settings.host, port=args.tp_port)
        await services.tp.start()
    return services


def configure(p: argparse.ArgumentParser, command: str) -> None:
    """``mos jd``."""
    p.description = ("Builds block templates from your Bitcoin node's JSON-RPC (getblocktemplate) under your "
                     "template policy (or takes them from a Stratum V2 Template Provider with --tp), declares them "
                     "to the pool's Job Declarator Server, sets them as custom jobs "
                     "on the pool's Stratum V2 extended channel (paying the pool's required outputs) and serves them "
                     "to Stratum V1 miners. Found blocks go to your node, the JDS and the pool. If the node or the "
                     "JDS is down, or a declaration is refused, miners get the pool's jobs until your templates are "
                     "back.")
    src = p.add_argument_group("template source (one of)")
    src.add_argument("--node", default=None, metavar="URL",
                     help="node RPC, http://user:password@host:port (Bitcoin Core: rpcuser/rpcpassword)")
    src.add_argument("--tp", default=None, metavar="HOST:PORT",
                     help="a Stratum V2 Template Provider (Template Distribution Protocol; e.g. mos pool --tp-port) "
                          "instead of the node RPC: it chooses the transactions, so no policy options")
    src.add_argument("--tp-key", default=None, metavar="AUTHORITY_PUBKEY",
                     help="the template provider's Noise authority key (default: the pool's, from --pool)")
    p.add_argument("--rpc-cookie", default=None, metavar="FILE", help="use bitcoind's .cookie file for auth")
    p.add_argument("--pool", required=True, metavar="URL",
                   help="the pool's Stratum V2 endpoint, stratum2+tcp://host:port/AUTHORITY_PUBKEY")
    p.add_argument("--jds", required=True, metavar="HOST:PORT", help="the pool's Job Declarator Server")
    p.add_argument("--user", default="openmos.jd", help="account on the pool (default: %(default)s)")
    add_miner_port_args(p, 3335)
    policy = p.add_argument_group("template policy (what goes into your blocks)")
    policy.add_argument("--min-fee-rate", type=float, default=0.0, metavar="SAT_PER_VB",
                        help="leave out transactions paying less (and those spending them)")
    policy.add_argument("--exclude-txid", action="append", default=[], metavar="TXID",
                        help="never include this transaction (repeatable)")
    policy.add_argument("--exclude-script", action="append", default=[], metavar="HEX",
                        help="never include a transaction paying this output script (repeatable)")
    policy.add_argument("--max-weight", type=int, default=4_000_000, help="block weight cap (default: %(default)s)")
    p.add_argument("--check-node-txs", choices=["hash", "full"], default="hash",
                   help="hash: check each transaction's bytes hash to its wtxid (fast); full: also parse every "
                        "transaction and recompute txid and weight (slower with big mempools)")
    p.add_argument("--poll-interval", type=float, default=0.05,
                   help="seconds between getbestblockhash polls (default: %(default)s)")
    p.add_argument("--no-status", action="store_true", help="plain logs instead of the live status")
    p.add_argument("--api-port", type=int, default=None, metavar="PORT",
                   help="serve the dashboard (web page at / and JSON at /api/v1/jd: whose template is mined, its "
                        "fees, transactions, weight and the policy) on --host at this port (0 = any free port)")
    p.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: until Ctrl-C)")


def jd_panel(service: JdService) -> Panel:
    s = service.status
    whose = "OWN template" if s.mode == "own" else "POOL's template" if s.mode == "pool" else "no work yet"
    table = Table(expand=True, show_header=False)
    table.add_row("mining", f"{whose} ({s.reason})")
    table.add_row("height / txs / fees / weight", f"{s.height} / {s.tx_count} / {s.fees} sat / {s.weight} WU")
    p = service.policy
    table.add_row("policy", f">= {p.min_fee_rate} sat/vB, <= {p.max_weight} WU, {len(p.excluded_txids)} txids and "
                            f"{len(p.excluded_scripts)} scripts excluded")
    table.add_row("shares forwarded / pool accepted / rejected",
                  f"{s.forwarded} / {service.mining.accepted} / {sum(service.mining.rejected.values())}")
    table.add_row("templates / fallbacks / blocks", f"{s.templates} / {s.fallbacks} / {len(s.blocks)}")
    return Panel(table, title=f"mos jd · miners: {service.url}")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_jd(args))


async def run_jd(args: argparse.Namespace) -> int:
    url = Sv2PoolUrl.parse(args.pool)
    jds_host, _, jds_port = args.jds.rpartition(":")
    if not jds_host or not jds_port.isdigit():
        raise ValueError(f"--jds must be HOST:PORT, got {args.jds!r}")
    if not 0.001 <= args.poll_interval <= 60:
        raise ValueError("--poll-interval must be between 0.001 and 60 seconds")
    policy = TemplatePolicy.from_strings(args.min_fee_rate, args.exclude_txid, args.exclude_script, args.max_weight)
    if (args.node is None) == (args.tp is None):
        raise ValueError("give exactly one template source: --node URL (JSON-RPC) or --tp HOST:PORT (TDP)")
    node: NodeRpcClient | TdpNode
    if args.tp is not None:
        if policy != TemplatePolicy():
            raise ValueError("--tp: the template provider chooses the transactions (TDP carries no per-transaction "
                             "fees); --min-fee-rate/--exclude-*/--max-weight need --node")
        tp = Sv2PoolUrl.parse(f"stratum2+tcp://{args.tp}/{args.tp_key or args.pool.rstrip('/').rsplit('/', 1)[-1]}")
        node = TdpNode(tp.host, tp.port, tp.authority_key)
    else:
        node = NodeRpcClient.from_url(args.node, args.rpc_cookie)
    service = JdService(node, url.host, url.port, jds_host, int(jds_port), url.authority_key, args.user,
                        policy=policy, downstream=PoolSettings(host=args.host, port=args.port,
                                                               start_difficulty=args.difficulty),
                        poll_interval=args.poll_interval, check_node_txs=args.check_node_txs)
    await service.start()
    log.info("mos jd: miners connect to %s", service.url)
    from openmos.jd.api import JdApi  # (FastAPI only when asked for)

    api = JdApi(service, args.host, args.api_port) if args.api_port is not None else None
    try:
        if api is not None:
            await api.start()
            log.info("mos jd: dashboard at %s/ (JSON: %s/api/v1/jd)", api.url, api.url)
        await serve(args.duration, lambda: Group(jd_panel(service)), not args.no_status)
    finally:
        if api is not None:
            await api.stop()
        await service.stop()
    return 0
