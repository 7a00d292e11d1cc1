"""``mos scan``, ``mos release`` and ``mos update``: integrity scanning and signed updates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from openmos.base.files import atomic_write
from openmos.security.release import ReleaseRepository, generate_keys
from openmos.security.scanner import SEVERITY_ORDER, Scanner, build_baseline
from openmos.security.signing import generate_keypair, sign_document
from openmos.security.update import DeviceUpdater, SlotInstaller


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scan = sub.add_parser("scan", help="scan a filesystem for malware indicators and integrity changes",
                          description="Checks IOC files and hosts entries, look-alike configs, persistence points, "
                                      "a signed baseline, processes running from /tmp and undeclared connections. "
                                      "Exit code 1 when a high or critical finding is present.")
    scan.add_argument("--root", type=Path, default=Path("/"), help="filesystem root to scan (default: /)")
    scan.add_argument("--baseline", type=Path, help="signed baseline JSON (from `mos scan --make-baseline`)")
    scan.add_argument("--pubkey", type=Path, help="public key that signed the baseline")
    scan.add_argument("--allow-endpoint", action="append", default=[], metavar="IP[:PORT]",
                      help="declared outbound endpoint (pools, fleet); repeatable")
    scan.add_argument("--make-baseline", type=Path, metavar="OUT", help="write a signed baseline instead")
    scan.add_argument("--key", type=Path, help="private key to sign the baseline with")
    scan.add_argument("--json", action="store_true", help="machine-readable output")

    keys = sub.add_parser("keygen", help="create an ed25519 key pair for baselines and desired pool state")
    keys.add_argument("private", type=Path)
    keys.add_argument("public", type=Path)

    rel = sub.add_parser("release", help="publish signed update bundles (TUF repository)")
    rel_sub = rel.add_subparsers(dest="release_command", required=True, metavar="ACTION")
    init = rel_sub.add_parser("init", help="create keys and version 1 metadata")
    init.add_argument("--repo", type=Path, required=True)
    init.add_argument("--keys", type=Path, required=True, help="key directory (private, keep offline)")
    sign = rel_sub.add_parser("sign", help="sign a bundle into the repository")
    sign.add_argument("bundle", type=Path)
    sign.add_argument("--version", required=True, help="bundle version, e.g. 0.2.0")
    sign.add_argument("--repo", type=Path, required=True)
    sign.add_argument("--keys", type=Path, required=True)
    ts = rel_sub.add_parser("timestamp", help="re-sign the timestamp (run daily)")
    ts.add_argument("--repo", type=Path, required=True)
    ts.add_argument("--keys", type=Path, required=True)

    upd = sub.add_parser("update", help="verify and install a signed update into the inactive A/B slot")
    upd.add_argument("target", help="bundle name in the repository")
    upd.add_argument("--repo", required=True, help="repository path or file:// URL")
    upd.add_argument("--root-of-trust", type=Path, required=True, help="the root.json this device ships with")
    upd.add_argument("--state", type=Path, required=True, help="device state directory (slots, metadata)")


def _scan(args: argparse.Namespace, console: Console) -> int:
    if args.make_baseline:
        if not args.key:
            console.print("mos scan --make-baseline needs --key PRIVATE.pem")
            return 2
        doc = sign_document(build_baseline(args.root), args.key.read_bytes())
        atomic_write(args.make_baseline, json.dumps(doc).encode())
        console.print(f"signed baseline of {len(doc['signed']['files'])} files written to {args.make_baseline}")
        return 0
    if args.baseline and args.pubkey:
        scanner = Scanner.with_signed_baseline(args.root, json.loads(args.baseline.read_text()),
                                               args.pubkey.read_bytes(), set(args.allow_endpoint))
    else:
        scanner = Scanner(args.root, None, set(args.allow_endpoint))
    report = scanner.scan()
    if args.json:
        print(json.dumps([f.__dict__ for f in report.findings], indent=1))
    else:
        table = Table(title=f"mos scan {report.root}: {len(report.findings)} finding(s), "
                            f"{report.files_hashed} files checked against the baseline")
        for col in ("severity", "check", "where", "why"):
            table.add_column(col)
        for f in sorted(report.findings, key=lambda f: -SEVERITY_ORDER[f.severity]):
            table.add_row(f.severity, f.check, f.path, f.detail)
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
    repo = args.repo if "://" in args.repo else f"file://{Path(args.repo).resolve()}"
    updater = DeviceUpdater(args.state, repo, args.root_of_trust.read_bytes(), SlotInstaller(args.state))
    active = updater.install(args.target, lambda slot: any(slot.iterdir()))
    console.print(f"active slot: {active}; " + "; ".join(updater.slots.state.history[-2:]))
    return 0
