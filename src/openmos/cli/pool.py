"""``mos pool``: the built-in local pool (Stratum V1; V2, node RPC, JDS and template provider as asked)."""

from __future__ import annotations

import argparse
import asyncio

from rich.console import Group

from openmos.cli import jd as jd_cli
from openmos.cli import sv2 as sv2_cli
from openmos.cli.args import DIFFICULTY, DURATION, add_miner_port_args, number
from openmos.cli.display import pool_panel, serve
from openmos.pool.server import LocalPool, PoolSettings
from openmos.pool.vardiff import VardiffSettings


def configure(parser: argparse.ArgumentParser, command: str) -> None:
    parser.description = ("A regtest-like local pool: locally generated chain, vardiff, version rolling, share "
                          "validation and block detection. No network needed.")
    add_pool_args(parser)
    sv2_cli.add_pool_args(parser)
    jd_cli.add_pool_args(parser)
    parser.add_argument("--no-status", action="store_true", help="plain logs instead of the live worker table")
    parser.add_argument("--duration", type=DURATION, default=0, help="stop after N seconds (0: run until Ctrl-C)")


def add_pool_args(parser: argparse.ArgumentParser, default_port: int = 3333, network_difficulty: float = 0.1) -> None:
    add_miner_port_args(parser, default_port)
    parser.add_argument("--network-difficulty", type=DIFFICULTY, default=network_difficulty,
                        help="difficulty of the local chain's blocks (default: %(default)s)")
    parser.add_argument("--share-interval", type=number(0, 3600, low_open=True), default=3.0,
                        help="vardiff target seconds per share (default: %(default)s)")
    parser.add_argument("--resume-window", type=number(0, 86400), default=300.0,
                        help="seconds a dropped miner can resume its session (same extranonce1, its shares "
                             "still valid) by offering its session id in mining.subscribe (default: %(default)s)")


def pool_settings(args: argparse.Namespace) -> PoolSettings:
    return PoolSettings(host=args.host, port=args.port, start_difficulty=args.difficulty,
                        network_difficulty=args.network_difficulty, resume_window=max(0.0, args.resume_window),
                        extranonce2_size=8 if getattr(args, "jds_port", None) is not None else 4,
                        vardiff=VardiffSettings(target_interval=args.share_interval,
                                                retarget_after=max(10.0, 4 * args.share_interval)))


def run(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        return sv2_cli.keygen(args)
    return asyncio.run(_run_pool(args))


async def _run_pool(args: argparse.Namespace) -> int:
    pool = LocalPool(pool_settings(args))
    await pool.start()
    v2 = services = None
    try:
        v2 = await sv2_cli.start_pool_v2(pool, args)
        services = await jd_cli.start_pool_services(pool, v2, args)
        await serve(args.duration, lambda: Group(pool_panel(pool)), not args.no_status)
    finally:
        if services is not None:
            await services.stop()
        if v2 is not None:
            await v2.stop()
        await pool.stop()
    return 0
