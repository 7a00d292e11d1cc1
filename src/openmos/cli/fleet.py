"""``mos fleet``: scan a network for miners, and a one-command simulated site with the dashboard."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import secrets
import tempfile
from pathlib import Path

import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from openmos.api.auth import AuthStore, Role
from openmos.base.net import free_local_port
from openmos.fleet.bus import BusConfig
from openmos.fleet.node import DeviceNode
from openmos.fleet.poller import poll_all
from openmos.fleet.service import FleetService
from openmos.fleet.simsite import FleetSimSite
from openmos.fleet.store import FleetStore
from openmos.fleet.web.app import create_fleet_app
from openmos.security.signing import generate_keypair


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fleet = sub.add_parser("fleet", help="fleet control plane: scan, simulated site demo with dashboard")
    fsub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    scan = fsub.add_parser("scan", help="find miners answering the cgminer API on a network (progress bar)")
    scan.add_argument("network", help="e.g. 10.0.0.0/24 (at most a /16)")
    scan.add_argument("--port", type=int, default=4028)
    scan.add_argument("--concurrency", type=int, default=500)
    scan.add_argument("--timeout", type=float, default=2.0)
    scan.add_argument("--store", default=None, help="save inventory: sqlite:///fleet.db or postgresql://...")
    demo = fsub.add_parser("demo", help="a simulated site (fleet-mode simulator) + the fleet dashboard")
    demo.add_argument("--miners", type=int, default=1000)
    demo.add_argument("--port", type=int, default=8090, help="dashboard port (default %(default)s)")
    demo.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: until Ctrl-C)")


async def _scan(args: argparse.Namespace, console: Console) -> int:
    net = ipaddress.ip_network(args.network, strict=False)
    if net.num_addresses > 65536:
        raise ValueError("scan at most a /16 at a time")
    ips = [str(ip) for ip in (net.hosts() if net.num_addresses > 2 else net)]
    with Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[found]} found"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("scan", total=len(ips), found=0)
        found = 0

        def tick(snap: object) -> None:
            nonlocal found
            found += bool(getattr(snap, "ok", False))
            progress.update(task, advance=1, found=found)

        snaps = await poll_all(ips, args.port, args.concurrency, args.timeout, progress=tick)
    miners = [s for s in snaps if s.ok]
    table = Table(title=f"{len(miners)} miner(s) on {net}")
    for col in ("ip", "TH/s", "W", "boards", "chips", "hottest C", "pool user"):
        table.add_column(col)
    for s in miners:
        table.add_row(s.ip, f"{s.hashrate_ths:.1f}", f"{s.power_w or 0:.0f}", str(s.boards), str(s.chips),
                      f"{s.hottest_c or 0:.1f}", s.pool_user)
    console.print(table)
    if args.store:
        store = FleetStore(args.store)
        for s in miners:
            store.upsert_device({"device": s.ip, "site": str(net), "ip": s.ip, "boards": s.boards})
        store.close()
        console.print(f"inventory saved to {args.store}")
    return 0


async def run_demo(miners: int, port: int, duration: float, console: Console) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="openmos-fleet-demo-"))
    generate_keypair(workdir / "fleet.pem", workdir / "fleet.pub")
    bus_port = free_local_port()
    service = FleetService(BusConfig(listen=[f"tcp/127.0.0.1:{bus_port}"]), f"sqlite:///{workdir / 'fleet.db'}",
                           (workdir / "fleet.pem").read_bytes(), workdir / "audit.jsonl", inventory_interval_s=10)
    await service.start()
    site = FleetSimSite(miners)
    await site.start()
    trusted = [(workdir / "fleet.pub").read_bytes()]
    nodes = [DeviceNode(service.bus, site.site, w, trusted, interval_s=5.0) for w in site.workers]
    for node in nodes:
        await node.start()
    auth = AuthStore(workdir / "auth.json")
    password = secrets.token_urlsafe(12)  # no default password: a fresh one for this demo, shown once
    auth.setup_owner("admin", password)
    auth.add_user("approver", password + "-2", Role.OPERATOR)
    server = uvicorn.Server(uvicorn.Config(create_fleet_app(service, auth), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    console.print(f"fleet demo: {miners} simulated miners (modelled) on a zenoh bus at tcp/127.0.0.1:{bus_port}")
    console.print(f"dashboard: http://127.0.0.1:{port}  ·  users: admin / {password}  and  approver / {password}-2")
    task = asyncio.create_task(server.serve())
    try:
        if duration:
            await asyncio.sleep(duration)
        else:
            await task
    finally:
        server.should_exit = True
        await task
        for node in nodes:
            await node.stop()
        await site.stop()
        await service.stop()


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.fleet_command == "scan":
        return asyncio.run(_scan(args, console))
    asyncio.run(run_demo(args.miners, args.port, args.duration, console))
    return 0
