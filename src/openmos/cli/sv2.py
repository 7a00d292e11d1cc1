"""Stratum V2 on the command line: ``mos pool keygen``, ``mos pool --sv2-port`` and ``mos proxy``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from openmos.base.files import atomic_write
from openmos.pool.server import LocalPool
from openmos.pool.sv2 import Sv2PoolServer, generate_authority_key
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
                           cert_validity_s=int(args.cert_validity * 3600))
    await server.start()
    log.info("Stratum V2 pool URL: %s (authority %s)", server.url, encode_authority_key(server.authority.xonly))
    return server
