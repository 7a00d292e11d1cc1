"""Supply-chain checks run by CI: secrets, hard-coded wallets and pools, undeclared endpoints, dependency
audit and an SBOM.

Usage: python scripts/supply_chain.py [--sbom OUT.json]
Exit code 1 on any finding; the dependency audit only warns when its vulnerability service is unreachable
(CI has no network beyond package indexes), and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET_PATTERNS = {
    "private key block": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "assigned secret": re.compile(r"(?i)\b(?:password|passwd|secret|api_key|token)\s*=\s*['\"][^'\"\s]{12,}['\"]"),
}
BECH32 = re.compile(r"\b(?:bc1|tb1)[ac-hj-np-z02-9]{25,87}\b")
BASE58 = re.compile(r"\b[13][a-km-zA-HJ-NP-Z1-9]{25,34}\b")
STRATUM = re.compile(r"stratum\+(?:tcp|ssl|tls)://([A-Za-z0-9.-]+)")
URL_HOST = re.compile(r"\b(?:https?|wss?|tcp)://([A-Za-z0-9.-]+\.[A-Za-z]{2,}|\d+\.\d+\.\d+\.\d+)")
PLACEHOLDERS = {"host", "HOST", "pool.example"}  # help texts show the URL form, not an address
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def is_base58_address(text: str) -> bool:
    """True for a base58check string with a valid checksum (so random words do not match)."""
    n = 0
    for ch in text:
        n = n * 58 + B58.index(ch)
    raw = n.to_bytes(25, "big") if n.bit_length() <= 200 else b""
    return len(raw) == 25 and hashlib.sha256(hashlib.sha256(raw[:21]).digest()).digest()[:4] == raw[21:]


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if line and (ROOT / line).is_file()]


def declared_hosts() -> set[str]:
    lines = (ROOT / "security" / "endpoints.txt").read_text().splitlines()
    return {ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")}


def scan_sources() -> list[str]:
    problems: list[str] = []
    declared = declared_hosts()
    for path in tracked_files():
        rel = path.relative_to(ROOT).as_posix()
        if path.suffix in {".png", ".gz", ".lock"}:
            continue
        text = path.read_text(errors="replace")
        for name, pattern in SECRET_PATTERNS.items():
            for m in pattern.finditer(text):
                if rel == "scripts/supply_chain.py":
                    continue
                problems.append(f"{rel}: possible {name}: {m.group(0)[:40]}")
        if not rel.startswith("src/"):
            continue  # wallets, pools and endpoints are checked in shipped code; tests use loopback fixtures
        for m in BECH32.finditer(text):
            problems.append(f"{rel}: hard-coded bech32 address {m.group(0)}")
        for m in BASE58.finditer(text):
            if is_base58_address(m.group(0)):
                problems.append(f"{rel}: hard-coded base58 address {m.group(0)}")
        for m in STRATUM.finditer(text):
            host = m.group(1)
            if host not in declared and host not in PLACEHOLDERS and not host.endswith(".example"):
                problems.append(f"{rel}: hard-coded pool {m.group(0)}")
        for m in URL_HOST.finditer(text):
            host = m.group(1)
            if host not in declared and not host.endswith(".example"):
                problems.append(f"{rel}: undeclared outbound endpoint {host} (declare it in security/endpoints.txt)")
    return problems


def audit_failure(stderr: str) -> str:
    """What made pip-audit fail, in one line: its last error line, not the top of a traceback."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith((" ", "\t"))]
    errors = [ln for ln in lines if not ln.startswith(("Traceback", "During handling", "The above exception"))]
    last = errors[-1] if errors else "no output"
    return last if len(last) <= 240 else last[:237] + "..."


def audit() -> int:
    cmd = [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--format", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    import json

    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        print(f"dependency audit could not run ({audit_failure(proc.stderr)}); dependencies NOT audited "
              "(run `make supply-chain` where PyPI's JSON API is reachable)")
        return 0
    deps = report.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    for d in vulnerable:
        ids = ", ".join(v["id"] for v in d["vulns"])
        print(f"VULNERABLE: {d['name']} {d['version']}: {ids}")
    if skipped and len(skipped) == len(deps):
        print(f"dependency audit: the vulnerability service was unreachable, {len(skipped)} packages NOT audited "
              "(run `make supply-chain` where PyPI's JSON API is reachable)")
    else:
        print(f"dependency audit: {len(deps) - len(skipped)} packages audited, {len(vulnerable)} vulnerable, "
              f"{len(skipped)} skipped")
    return 1 if vulnerable else 0


def sbom(out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "cyclonedx_py", "environment", "--output-format", "JSON",
                    "--output-file", str(out), sys.prefix], check=True, capture_output=True)
    print(f"SBOM (CycloneDX) written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sbom", type=Path, default=ROOT / "test-output" / "sbom.cdx.json")
    parser.add_argument("--no-audit", action="store_true")
    args = parser.parse_args()
    problems = scan_sources()
    for p in problems:
        print(f"FINDING: {p}")
    print(f"source scan: {len(problems)} finding(s) (secrets, wallets, pools, undeclared endpoints)")
    failed = bool(problems)
    if not args.no_audit:
        failed |= bool(audit())
    sbom(args.sbom)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
