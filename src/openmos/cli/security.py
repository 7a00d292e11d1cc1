"""``mos scan``, ``mos release`` and ``mos update``: integrity scanning and signed updates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from openmos.base.files import atomic_write
from openmos.miner.config import AgentConfig
from openmos.security.health import AgentHealthGate
from openmos.security.pools import pool_state
from openmos.security.release import ReleaseRepository, generate_keys
from openmos.security.scanner import SEVERITY_ORDER, Scanner, build_baseline
from openmos.security.signing import generate_keypair, sign_document
from openmos.security.update import DeviceUpdater, SlotInstaller


def configure(parser: argparse.ArgumentParser, command: str) -> None:
    {"scan": _configure_scan, "keygen": _configure_keygen, "release": _configure_release,
     "update": _configure_update}[command](parser)


def _configure_scan(scan: argparse.ArgumentParser) -> None:
    scan.description = ("Checks IOC files and hosts entries, dnsmasq redirects, look-alike configs, cgminer/bmminer "
                        "pools, persistence points (cron, systemd, init scripts, inittab, shell profiles, SSH keys), "
                        "executables in tmp/var/tmp/dev/shm, a signed baseline, processes running from /tmp and "
                        "undeclared connections. Links are never followed and file contents are never printed. "
                        "Exit code 1 when a high or critical finding is present.")
    scan.add_argument("--root", type=Path, default=Path("/"), help="filesystem root to scan (default: /)")
    scan.add_argument("--baseline", type=Path, help="signed baseline JSON (from `mos scan --make-baseline`)")
    scan.add_argument("--pubkey", type=Path, help="public key that signed the baseline")
    scan.add_argument("--allow-endpoint", action="append", default=[], metavar="HOST[:PORT]",
                      help="declared endpoint (your pools, fleet): host name or IP, optional port, or :PORT; "
                           "repeatable. Connections and cgminer/bmminer pools elsewhere are reported")
    scan.add_argument("--make-baseline", type=Path, metavar="OUT", help="write a signed baseline instead")
    scan.add_argument("--key", type=Path, help="private key to sign the baseline with")
    scan.add_argument("--json", action="store_true", help="machine-readable output")


def _configure_keygen(keys: argparse.ArgumentParser) -> None:
    keys.add_argument("private", type=Path, help="where to write the private key (keep it offline)")
    keys.add_argument("public", type=Path, help="where to write the public key (give it to devices: --pubkey)")


def _configure_release(rel: argparse.ArgumentParser) -> None:
    rel_sub = rel.add_subparsers(dest="release_command", required=True, metavar="ACTION")
    init = rel_sub.add_parser("init", help="create keys and version 1 metadata")
    init.add_argument("--repo", type=Path, required=True, help="release repository directory (published)")
    init.add_argument("--keys", type=Path, required=True, help="key directory (private, keep offline)")
    sign = rel_sub.add_parser("sign", help="sign a bundle into the repository")
    sign.add_argument("bundle", type=Path, help="the update bundle (.tar.gz) to publish")
    sign.add_argument("--version", required=True, help="bundle version, e.g. 0.2.0")
    sign.add_argument("--repo", type=Path, required=True, help="release repository directory")
    sign.add_argument("--keys", type=Path, required=True, help="key directory from `mos release init`")
    ts = rel_sub.add_parser("timestamp", help="re-sign the timestamp (run daily)")
    ts.add_argument("--repo", type=Path, required=True, help="release repository directory")
    ts.add_argument("--keys", type=Path, required=True, help="key directory from `mos release init`")


def _configure_update(upd: argparse.ArgumentParser) -> None:
    upd.add_argument("target", help="bundle name in the repository")
    upd.add_argument("--repo", required=True, help="repository path or file:// URL")
    upd.add_argument("--root-of-trust", type=Path, required=True, help="the root.json this device ships with")
    upd.add_argument("--state", type=Path, required=True, help="device state directory (slots, metadata)")
    upd.add_argument("--agent-config", type=Path, required=True,
                     help="the device's agent config: the new slot's agent is started with it and must hash "
                          "and get a share accepted by one of its pools, or the update is reverted")
    upd.add_argument("--health-deadline", type=float, default=90.0, metavar="S",
                     help="seconds the new slot's agent gets to prove itself (default: %(default)s)")


def _scan(args: argparse.Namespace, console: Console) -> int:
    if not args.root.is_dir():
        raise ValueError(f"scan root {args.root} is not a directory")
    if args.make_baseline:
        if not args.key:
            raise ValueError("--make-baseline needs --key PRIVATE.pem (the key that signs the baseline)")
        doc = sign_document(build_baseline(args.root), args.key.read_bytes())
        atomic_write(args.make_baseline, json.dumps(doc).encode())
        console.print(f"signed baseline of {len(doc['signed']['files'])} files written to {args.make_baseline}")
        return 0
    if bool(args.baseline) != bool(args.pubkey):
        raise ValueError("--baseline and --pubkey go together: a baseline is only used once its signature "
                         "verifies against the public key that made it")
    if args.baseline:
        try:
            envelope = json.loads(args.baseline.read_bytes())
        except (ValueError, RecursionError):
            raise ValueError(f"baseline {args.baseline} is not JSON (expected the output of "
                             "`mos scan --make-baseline`)") from None
        if not isinstance(envelope, dict):
            raise ValueError(f"baseline {args.baseline} is not a signed baseline document")
        scanner = Scanner.with_signed_baseline(args.root, envelope, args.pubkey.read_bytes(), set(args.allow_endpoint))
    else:
        scanner = Scanner(args.root, None, set(args.allow_endpoint))
    report = scanner.scan()
    if args.json:
        print(json.dumps([f.__dict__ for f in report.findings], indent=1))
    else:
        mode = f"{report.files_hashed} files checked against the signed baseline" if args.baseline \
            else "no baseline (integrity not checked; persistence points judged by content)"
        table = Table(title=f"mos scan {escape(report.root)}: {len(report.findings)} finding(s), {mode}")
        for col in ("severity", "check", "where", "why"):
            table.add_column(col)
        for f in sorted(report.findings, key=lambda f: -SEVERITY_ORDER[f.severity]):
            table.add_row(f.severity, f.check, Text(f.path), Text(f.detail))  # Text: names are not markup
        console.print(table)
    return 1 if SEVERITY_ORDER[report.worst()] >= SEVERITY_ORDER["high"] else 0


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.command == "scan":
        return _scan(args, console)
    if args.command == "keygen":
        generate_keypair(args.private, args.public)
        console.print(f"wrote {args.private} (keep it secret) and {args.public}")
        return 0
    if args.command == "release":
        if args.release_command == "init":
            generate_keys(args.keys)
            root = ReleaseRepository(args.repo, args.keys).init()
            console.print(f"repository ready; ship {root} to devices as their root of trust")
        elif args.release_command == "sign":
            target = ReleaseRepository(args.repo, args.keys).publish(args.bundle, custom={"version": args.version})
            console.print(f"signed {target.path} ({target.length} bytes) as version {args.version}")
        else:
            ReleaseRepository(args.repo, args.keys).refresh_timestamp()
            console.print("timestamp re-signed")
        return 0
    return _update(args, console)


def _update(args: argparse.Namespace, console: Console) -> int:
    if not 1 <= args.health_deadline <= 3600:
        raise ValueError("--health-deadline must be between 1 and 3600 seconds")
    pools = {p["url"] for g in pool_state(AgentConfig.load(args.agent_config).model_dump()) for p in g["pools"]}
    repo = args.repo if "://" in args.repo else f"file://{Path(args.repo).resolve()}"
    slots = SlotInstaller(args.state)
    updater = DeviceUpdater(args.state, repo, args.root_of_trust.read_bytes(), slots)
    gate = AgentHealthGate(args.agent_config, pools, deadline_s=args.health_deadline, log_dir=args.state)
    before = slots.state.active
    with console.status(f"verifying {args.target}, then trial-running the new slot's agent "
                        f"(up to {args.health_deadline:g} s)"):
        active = updater.install(args.target, gate)
    console.print(Text(f"active slot: {active}; " + "; ".join(slots.state.history[-3:])))
    if active == before:
        console.print("the update was NOT kept: the previous slot is still active")
        return 1
    return 0
