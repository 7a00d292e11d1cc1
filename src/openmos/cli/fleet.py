"""``mos fleet``: the fleet CA and device enrollment, scanning a network for miners, and a one-command
simulated site with the dashboard."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import secrets
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from openmos.api.auth import AuthStore, Role
from openmos.api.server import HttpServer
from openmos.base.net import free_local_port
from openmos.base.pem import private_pem
from openmos.cli.display import serve
from openmos.fleet.bus import BusConfig, FleetBus
from openmos.fleet.enroll import EnrollmentRefused, EnrollmentRegistry, fingerprint
from openmos.fleet.node import DeviceHost, DeviceNode
from openmos.fleet.pki import ROLES, FleetCA, FleetDir
from openmos.fleet.poller import poll_all
from openmos.fleet.service import FleetService
from openmos.fleet.store import FleetStore
from openmos.fleet.web.app import create_fleet_app
from openmos.testbed.site import FleetSimSite

KEY_HELP = "fleet directory made by `mos fleet init` (CA, controller keys, enrollment state)"


def configure(fleet: argparse.ArgumentParser, command: str) -> None:
    fsub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    init = fsub.add_parser("init", help="create the fleet CA, the controller's TLS identity and command key",
                           description="Creates DIR/ca (the fleet CA), DIR/controller (TLS certificate and the "
                                       "ed25519 command key) and DIR/enrollment.json. See docs/fleet-keys.md.")
    init.add_argument("dir", type=Path, help="where to create the fleet keys (kept 0700, keys 0600)")
    token = fsub.add_parser("token", help="a one-time enrollment token for one device (shown once)")
    token.add_argument("dir", type=Path, help=KEY_HELP)
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds the token stays valid (default 1 h)")
    token.add_argument("--site", default=None, help="only valid for a device of this site")
    lst = fsub.add_parser("enrollments", help="list enrolled devices and requests waiting for approval")
    lst.add_argument("dir", type=Path, help=KEY_HELP)
    for name, text in (("approve", "enroll a waiting device (compare its key fingerprint first)"),
                       ("reject", "drop a waiting enrollment request"),
                       ("revoke", "unpin an enrolled device: nothing it sends is believed any more")):
        cmd = fsub.add_parser(name, help=text)
        cmd.add_argument("dir", type=Path, help=KEY_HELP)
        cmd.add_argument("device", help="SITE/DEVICE, as listed by `mos fleet enrollments`")
        if name != "revoke":
            cmd.add_argument("--fingerprint", default=None,
                             help="only if the waiting key still has this fingerprint (as listed)")
    issue = fsub.add_parser("issue", help="issue a TLS certificate and key for a bus node (provisioning)")
    issue.add_argument("dir", type=Path, help=KEY_HELP)
    issue.add_argument("--role", choices=ROLES, required=True,
                       help="controller, device, or enrollee (may only ask to enroll; valid 1 day)")
    issue.add_argument("--site", default="", help="the site the node belongs to (device and enrollee roles)")
    issue.add_argument("--device", default="", help="the device id (device role)")
    issue.add_argument("--out", type=Path, required=True, help="directory for ca.crt, node.crt, node.key")
    scan = fsub.add_parser("scan", help="find miners answering the cgminer API on a network (progress bar)")
    scan.add_argument("network", help="e.g. 10.0.0.0/24 (at most a /16)")
    scan.add_argument("--port", type=int, default=4028, help="cgminer API port (default %(default)s)")
    scan.add_argument("--concurrency", type=int, default=500, help="addresses probed at once (default %(default)s)")
    scan.add_argument("--timeout", type=float, default=2.0, help="seconds per address (default %(default)s)")
    scan.add_argument("--store", default=None, help="save inventory: sqlite:///fleet.db or postgresql://...")
    demo = fsub.add_parser("demo", help="a simulated site (fleet-mode simulator) + the fleet dashboard")
    demo.add_argument("--miners", type=int, default=1000, help="simulated miners (default %(default)s)")
    demo.add_argument("--port", type=int, default=8090, help="dashboard port (default %(default)s)")
    demo.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: until Ctrl-C)")


async def _scan(args: argparse.Namespace, console: Console) -> int:
    net = ipaddress.ip_network(args.network, strict=False)
    if net.num_addresses > 65536:
        raise ValueError("scan at most a /16 at a time")
    # --concurrency 0 waited for ever, --port 99999 ended in an OverflowError traceback, --timeout nan or -1
    # "found" nothing at once
    if not 1 <= args.port <= 65535:
        raise ValueError("--port must be from 1 to 65535")
    if not 1 <= args.concurrency <= 10_000:
        raise ValueError("--concurrency must be from 1 to 10000")
    if not 0 < args.timeout <= 60:  # False for NaN too
        raise ValueError("--timeout must be more than 0 and at most 60 seconds")
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


def _enrollment_command(args: argparse.Namespace, console: Console) -> int:
    fleet_dir = FleetDir(args.dir)
    if args.fleet_command == "init":
        fleet_dir.init()
        console.print(f"fleet CA and controller keys created in {args.dir} (private keys 0600). "
                      f"Keep {fleet_dir.ca_key} offline once devices are enrolled. Next: `mos fleet token "
                      f"{args.dir}` for each device, or approve requests with `mos fleet approve`.")
        return 0
    if not fleet_dir.exists():
        raise FileNotFoundError(f"no fleet CA in {args.dir}: run `mos fleet init {args.dir}` first")
    registry = EnrollmentRegistry(fleet_dir.enrollment)
    if args.fleet_command == "token":
        token = registry.issue_token(args.ttl, args.site)
        where = f" for site {args.site}" if args.site else ""
        console.print(f"one-time enrollment token (valid {args.ttl:.0f} s{where}, shown once):")
        console.print(token, markup=False, highlight=False)
        return 0
    if args.fleet_command == "issue":
        ident = fleet_dir.ca().issue(args.role, args.site, args.device)
        args.out.mkdir(parents=True, exist_ok=True, mode=0o700)
        (args.out / "ca.crt").write_bytes(ident.ca_pem)
        (args.out / "node.crt").write_bytes(ident.cert_pem)
        key = args.out / "node.key"
        key.touch(mode=0o600)
        key.write_bytes(ident.key_pem)
        console.print(f"{args.role} certificate written to {args.out} (node.key is 0600: move it to the node)")
        return 0
    if args.fleet_command == "enrollments":
        table = Table(title=f"enrollment state in {fleet_dir.enrollment}")
        for col in ("device", "state", "key fingerprint", "via"):
            table.add_column(col)
        for name, entry in sorted(registry.enrolled.items()):
            table.add_row(name, "enrolled", fingerprint(entry.public_key), entry.via)
        for name, waiting in sorted(registry.pending.items()):
            table.add_row(name, "waiting", fingerprint(waiting.public_key), "-")
        console.print(table)
        return 0
    site, _, device = args.device.partition("/")
    if not site or not device:
        raise ValueError(f"name the device as SITE/DEVICE, not {args.device!r}")
    try:
        if args.fleet_command == "revoke":
            registry.revoke(site, device)
        else:  # the dashboard's approve/reject buttons call the same two methods
            getattr(registry, args.fleet_command)(site, device, args.fingerprint)
    except KeyError as exc:
        console.print(f"[red]{exc.args[0]}[/red]")
        return 1
    except EnrollmentRefused as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    console.print(f"{args.device}: {args.fleet_command} done")
    return 0


async def run_demo(miners: int, port: int, duration: float, console: Console) -> None:
    """A simulated site over mutual TLS. Every key lives in memory only; the database and audit log go to a
    temporary directory that is removed at exit, so nothing is left behind."""
    with tempfile.TemporaryDirectory(prefix="openmos-fleet-demo-") as tmp:
        await _demo(Path(tmp), miners, port, duration, console)


async def _demo(workdir: Path, miners: int, port: int, duration: float, console: Console) -> None:
    ca = FleetCA.create()
    command_key = Ed25519PrivateKey.generate()
    command_pem = private_pem(command_key)
    command_pub = command_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    bus_port = free_local_port()
    endpoint = f"tls/127.0.0.1:{bus_port}"
    registry = EnrollmentRegistry(None)
    service = FleetService(BusConfig(listen=[endpoint], tls=ca.issue("controller"), role="controller",
                                     sites=("sim-site",)),
                           f"sqlite:///{workdir / 'fleet.db'}", command_pem, workdir / "audit.jsonl",
                           inventory_interval_s=10, registry=registry, ca=ca, command_key_pem=command_pub)
    await service.start()
    # The simulated site is one bus node with a device certificate, connecting to the controller over mTLS.
    site_bus = FleetBus(BusConfig(connect=[endpoint], tls=ca.issue("device", "sim-site"), role="device"))
    await site_bus.open()
    site = FleetSimSite(miners)
    await site.start()
    host = DeviceHost(site_bus, site.site)  # the site's devices share one queryable and one subscription
    nodes = [DeviceNode(site_bus, site.site, w, [command_pub], interval_s=5.0) for w in site.workers]
    try:
        for node in nodes:
            host.add(node)
        await host.start()
        # Each simulated device enrolls its own key over the bus with a one-time token.
        tokens = [registry.issue_token(300, site.site) for _ in nodes]
        replies = await asyncio.gather(*(n.enroll(t, timeout_s=30) for n, t in zip(nodes, tokens, strict=True)))
        enrolled = sum(r.get("status") == "enrolled" for r in replies)
        auth = AuthStore(None)  # accounts in memory: the demo writes no password hashes to disk
        admin_password, approver_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        auth.setup_owner("admin", admin_password)
        auth.add_user("approver", approver_password, Role.OPERATOR)
        server = HttpServer(create_fleet_app(service, auth), "127.0.0.1", port, name="fleet dashboard")
        console.print(f"fleet demo: {miners} simulated miners (modelled), {enrolled} enrolled with one-time tokens, "
                      f"on a zenoh bus with mutual TLS at {endpoint}")
        console.print(f"dashboard: http://127.0.0.1:{port}  ·  users: admin / {admin_password}  and  "
                      f"approver / {approver_password}", markup=False, highlight=False)
        await server.start()
        try:
            await serve(duration, None, False)
        finally:
            await server.stop()
    finally:
        await host.stop()
        await site.stop()
        await site_bus.close()
        await service.stop()


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.fleet_command == "scan":
        return asyncio.run(_scan(args, console))
    if args.fleet_command != "demo":
        return _enrollment_command(args, console)
    asyncio.run(run_demo(args.miners, args.port, args.duration, console))
    return 0
