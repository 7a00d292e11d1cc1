"""Stratum V2 on the command line: ``mos pool keygen``, ``mos pool --sv2-port`` and ``mos proxy``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from openmos.base.files import atomic_write
from openmos.cli.args import add_miner_port_args
from openmos.cli.display import MAX_ROWS, literal, more_rows, serve, si
from openmos.pool.server import LocalPool
from openmos.pool.sv2 import Sv2PoolServer, generate_authority_key
from openmos.pool.vardiff import VardiffSettings
from openmos.proxy import FarmProxy, ProxySettings
from openmos.proxy.api import ProxyApis
from openmos.stratum.v2.noise import encode_authority_key, xonly_public_key

log = logging.getLogger(__name__)



def add_pool_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["serve", "keygen"], default="serve",
                        help="serve (default) runs the pool; keygen writes a new Stratum V2 authority key pair")
    v2 = parser.add_argument_group("Stratum V2 (encrypted, authenticated; beside V1 on its own port)")
    v2.add_argument("--sv2-port", type=int, default=None,
                    help="also serve Stratum V2 on this port (0 = any free port)")
    v2.add_argument("--authority-key", type=Path, default=None, metavar="FILE",
                    help="authority secret key file from `mos pool keygen` (keygen: where to write it; "
                         "serve: without it a throw-away key is used and the pool URL changes every start)")
    v2.add_argument("--cert-validity", type=float, default=24.0, metavar="HOURS",
                    help="validity of the server certificate signed at start (default: %(default)s h)")
    v2.add_argument("--sv2-ack-every", type=int, default=1, metavar="N",
                    help="acknowledge accepted V2 shares in batches of N (one SubmitShares.Success for N submits, "
                         "as the specification allows; default: %(default)s, each share at once)")
    v2.add_argument("--sv2-ack-after", type=float, default=0.0, metavar="SECONDS",
                    help="with --sv2-ack-every: acknowledge a partial batch this long after its oldest share "
                         "(default: 0, only full batches)")


def keygen(args: argparse.Namespace) -> int:
    path: Path = args.authority_key or Path("pool-authority.key")
    if path.exists():
        raise ValueError(f"{path} exists; refusing to overwrite an authority key (miners trust it)")
    secret, public = generate_authority_key()
    atomic_write(path, secret.hex().encode() + b"\n")  # mkstemp: readable by the owner only
    print(f"wrote the authority secret key to {path} (keep it private; back it up)")
    print(f"authority public key (publish it; miners put it in the pool URL): {public}")
    print(f"example URL: stratum2+tcp://<this host>:3336/{public}")
    return 0


def load_authority_secret(path: Path) -> bytes:
    try:
        secret = bytes.fromhex(path.read_text().strip())
        xonly_public_key(secret)
    except ValueError:
        raise ValueError(f"{path} is not an authority key written by `mos pool keygen`") from None
    return secret


async def start_pool_v2(pool: LocalPool, args: argparse.Namespace) -> Sv2PoolServer | None:
    if args.sv2_port is None:
        return None
    if args.authority_key is not None:
        secret = load_authority_secret(args.authority_key)
    else:
        secret, _ = generate_authority_key()
        log.warning("no --authority-key: using a throw-away authority key; run `mos pool keygen` for a stable one")
    if not 0 < args.cert_validity <= 24 * 365:
        raise ValueError("--cert-validity must be between 0 and 8760 hours")
    server = Sv2PoolServer(pool, secret, host=pool.settings.host, port=args.sv2_port,
                           cert_validity_s=int(args.cert_validity * 3600), ack_every=args.sv2_ack_every,
                           ack_after_s=args.sv2_ack_after)
    await server.start()
    log.info("Stratum V2 pool URL: %s (authority %s)", server.url, encode_authority_key(server.authority.xonly))
    return server


def configure(p: argparse.ArgumentParser, command: str) -> None:
    """``mos proxy``."""
    p.description = ("Accepts any Stratum V1 miner (stock firmware, cpuminer, OpenMOS) and mines for them on one "
                     "encrypted, authenticated Stratum V2 extended channel. Every share is validated here before it "
                     "is forwarded; each miner gets its own extranonce range and vardiff. Several --upstream options "
                     "fail over in order. Statistics: cgminer API (devs = one row per miner), REST and Prometheus "
                     "/metrics.")
    p.add_argument("--upstream", action="append", required=True, metavar="URL",
                   help="stratum2+tcp://host:port/AUTHORITY_PUBKEY (repeat for failover, first = primary)")
    p.add_argument("--user", default="openmos.proxy", help="account on the upstream pool (default: %(default)s)")
    add_miner_port_args(p, 3334)
    p.add_argument("--share-interval", type=float, default=5.0,
                   help="per-miner vardiff target seconds per share (0 disables vardiff; default: %(default)s)")
    p.add_argument("--api-port", type=int, default=4029, help="cgminer API port (0 = any free; default: %(default)s)")
    p.add_argument("--rest-port", type=int, default=8081, help="REST + /metrics port (default: %(default)s)")
    p.add_argument("--no-api", action="store_true", help="run without the statistics APIs")
    p.add_argument("--no-status", action="store_true", help="plain logs instead of the live table")
    p.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: until Ctrl-C)")


def proxy_panel(proxy: FarmProxy) -> Panel:
    table = Table(expand=True)
    for col in ("worker", "peer", "accepted", "rejected", "stale", "forwarded", "upstream ok/rej", "diff",
                "verified rate"):
        table.add_column(col)
    connected = [s for s in proxy.stats() if s.connected]
    for s in sorted(connected, key=lambda s: s.accepted, reverse=True)[:MAX_ROWS]:
        table.add_row(literal(s.worker or "-"), literal(s.peer), str(s.accepted), str(s.rejected), str(s.stale),
                      str(s.forwarded), f"{s.upstream_accepted}/{s.upstream_rejected}", f"{s.difficulty:.4g}",
                      si(s.hashrate()))
    more_rows(table, len(connected) - MAX_ROWS, "miners")
    up = proxy.upstream
    state = f"upstream {up.url}" if up is not None and not up.closed.is_set() else "NO UPSTREAM"
    return Panel(table, title=f"proxy {proxy.url} · {state} · switches {proxy.upstream_switches}")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_proxy(args))


async def run_proxy(args: argparse.Namespace) -> int:
    vardiff = VardiffSettings(target_interval=args.share_interval) if args.share_interval > 0 else None
    settings = ProxySettings(upstreams=tuple(args.upstream), user=args.user, host=args.host, port=args.port,
                             start_difficulty=args.difficulty, vardiff=vardiff)
    proxy = FarmProxy(settings)
    await proxy.start()
    apis = None
    try:
        if not args.no_api:
            apis = ProxyApis(proxy, "127.0.0.1", args.api_port, args.rest_port)
            await apis.start()
            log.info("proxy statistics: cgminer API on 127.0.0.1:%d, REST and /metrics on http://127.0.0.1:%d",
                     apis.cgminer.port, apis.rest_port)
        await serve(args.duration, lambda: Group(proxy_panel(proxy)), not args.no_status)
    finally:
        if apis is not None:
            await apis.stop()
        await proxy.stop()
    return 0
