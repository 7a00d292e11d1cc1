"""Integrity and malware scanner for a miner's filesystem (``mos scan``).

It scans a *root directory* (``/`` on a device, a fake tree in tests) for: known indicators of compromise
from real miner malware, look-alike configuration files, persistence points, changes against a signed
baseline, processes running from temporary directories, and established connections to endpoints nobody
declared. Findings carry a severity and a reason; nothing is deleted, the operator decides.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmos.security.signing import verify_document

# Indicators from real attacks on Antminer control boards (shared/reference/security.md).
IOC_FILES = {
    "etc/ld.so.preload": "preload hook used by the 'Antbuild' pool-rewrite malware",
    "usr/bin/build": "'Antbuild' dropper",
    "config/.antminers": "dropped by pool-hijacking malware",
    "usr/bin/antminers": "dropped by pool-hijacking malware",
    "nvdata/.shadow": "hidden credential store dropped by malware",
}
IOC_HOSTS = {
    "bitmsfser.info": "pool-rewrite malware command host",
    "auth.minerlink.com": "Antbleed remote kill switch",
}
IOC_PORTS = {7000: "Antbleed phone-home port"}
OVERSIZE = {"usr/bin/ntpd": 1_500_000}  # trojanised ntpd seen several times larger than the real one
KNOWN_CONFIGS = ("bmminer.conf", "cgminer.conf", "agent.toml", "openmos.toml", "network.conf")
PERSISTENCE_GLOBS = ("etc/crontab", "etc/cron.d/*", "var/spool/cron/crontabs/*", "etc/rc.local", "etc/init.d/*",
                     "etc/systemd/system/*", "root/.ssh/authorized_keys", "home/*/.ssh/authorized_keys",
                     "etc/profile.d/*")
BASELINE_DIRS = ("usr/bin", "usr/sbin", "bin", "sbin", "lib", "etc", "config", "opt/openmos")
TEMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/")
SEVERITY_ORDER = {"critical": 3, "high": 2, "medium": 1, "info": 0}


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    path: str
    detail: str


@dataclass
class ScanReport:
    root: str
    findings: list[Finding] = field(default_factory=list)
    files_hashed: int = 0
    started: float = field(default_factory=time.time)

    def worst(self) -> str:
        return max((f.severity for f in self.findings), key=SEVERITY_ORDER.__getitem__, default="info")

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _walk(root: Path, rel_dirs: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    for rel in rel_dirs:
        base = root / rel
        if not base.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                yield path.relative_to(root).as_posix(), path


def build_baseline(root: Path, dirs: tuple[str, ...] = BASELINE_DIRS) -> dict[str, Any]:
    """Hashes of every regular file under ``dirs`` (sign it with signing.sign_document)."""
    files = {rel: sha256_file(path) for rel, path in _walk(root, dirs)}
    for pattern in PERSISTENCE_GLOBS:  # persistence points outside those dirs (e.g. ~/.ssh) too
        for path in root.glob(pattern):
            if path.is_file() and not path.is_symlink():
                files[path.relative_to(root).as_posix()] = sha256_file(path)
    return {"created": int(time.time()), "dirs": list(dirs), "files": files}


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _parse_proc_net(path: Path) -> Iterator[tuple[str, int, str]]:
    """(remote ip, remote port, state hex) from /proc/net/tcp or tcp6."""
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return
    for line in lines:
        parts = line.split()
        if len(parts) < 4 or ":" not in parts[2]:
            continue
        addr_hex, port_hex = parts[2].split(":")
        raw = bytes.fromhex(addr_hex)
        if len(raw) == 4:
            ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
        else:  # tcp6: four little-endian 32-bit words
            ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        yield ip, int(port_hex, 16), parts[3]


@dataclass
class Scanner:
    root: Path
    baseline: dict[str, Any] | None = None
    declared_endpoints: set[str] = field(default_factory=set)  # "ip", "ip:port" or ":port"

    @classmethod
    def with_signed_baseline(cls, root: Path, envelope: dict[str, Any], public_pem: bytes,
                             declared_endpoints: set[str] | None = None) -> Scanner:
        return cls(root, verify_document(envelope, public_pem), declared_endpoints or set())

    def scan(self) -> ScanReport:
        report = ScanReport(str(self.root))
        for check in (self._iocs, self._hosts, self._lookalikes, self._oversize, self._persistence,
                      self._baseline, self._processes, self._connections):
            report.findings.extend(check(report))
        return report

    # -- checks ---------------------------------------------------------------------------------------

    def _iocs(self, _: ScanReport) -> Iterator[Finding]:
        for rel, why in IOC_FILES.items():
            if (self.root / rel).exists() or (self.root / rel).is_symlink():
                yield Finding("ioc-file", "critical", rel, why)

    def _hosts(self, _: ScanReport) -> Iterator[Finding]:
        for rel in ("etc/hosts", "etc/resolv.conf"):
            path = self.root / rel
            if not path.is_file():
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                text = line.split("#", 1)[0].lower()
                for host, why in IOC_HOSTS.items():
                    if host in text:
                        yield Finding("ioc-host", "critical", f"{rel}:{n}", f"{host}: {why}")

    def _lookalikes(self, _: ScanReport) -> Iterator[Finding]:
        config = self.root / "config"
        if not config.is_dir():
            return
        for path in config.iterdir():
            name = path.name
            if name in KNOWN_CONFIGS:
                continue
            for known in KNOWN_CONFIGS:
                if _edit_distance(name.lower(), known) <= 2:
                    yield Finding("lookalike-config", "high", f"config/{name}",
                                  f"looks like {known} (malware hides pool settings in look-alike files)")
                    break

    def _oversize(self, _: ScanReport) -> Iterator[Finding]:
        for rel, limit in OVERSIZE.items():
            path = self.root / rel
            if path.is_file() and path.stat().st_size > limit:
                yield Finding("oversize-binary", "high", rel, f"{path.stat().st_size} bytes > {limit} expected")

    def _persistence(self, _: ScanReport) -> Iterator[Finding]:
        known = (self.baseline or {}).get("files", {})
        for pattern in PERSISTENCE_GLOBS:
            for path in self.root.glob(pattern):
                if not path.is_file():
                    continue
                rel = path.relative_to(self.root).as_posix()
                content = path.read_text(errors="replace")
                active = [ln for ln in content.splitlines() if ln.strip() and not ln.strip().startswith("#")
                          and ln.strip() != "exit 0"]
                if rel in known and known[rel] == sha256_file(path):
                    continue
                if self.baseline is None:
                    if active:
                        yield Finding("persistence", "medium", rel, f"{len(active)} active line(s); no baseline to "
                                      "compare with, review them")
                    continue
                state = "changed since" if rel in known else "not in"
                yield Finding("persistence", "high", rel, f"persistence point {state} the signed baseline: "
                              + "; ".join(active[:3])[:200])

    def _baseline(self, report: ScanReport) -> Iterator[Finding]:
        if self.baseline is None:
            return
        known: dict[str, str] = self.baseline["files"]
        dirs = tuple(self.baseline.get("dirs", BASELINE_DIRS))
        seen = set()
        for rel, path in _walk(self.root, dirs):
            seen.add(rel)
            report.files_hashed += 1
            digest = sha256_file(path)
            if rel not in known:
                yield Finding("integrity", "high", rel, "file not in the signed baseline")
            elif known[rel] != digest:
                yield Finding("integrity", "critical", rel, "file differs from the signed baseline")
        for rel in sorted(set(known) - seen):
            if not (self.root / rel).is_file():  # persistence files outside ``dirs`` are checked separately
                yield Finding("integrity", "medium", rel, "file from the signed baseline is missing")

    def _processes(self, _: ScanReport) -> Iterator[Finding]:
        proc = self.root / "proc"
        if not proc.is_dir():
            return
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            exe = entry / "exe"
            try:
                target = os.readlink(exe)
            except OSError:
                continue
            if target.startswith(TEMP_DIRS) or target.endswith(" (deleted)"):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip() \
                    if (entry / "cmdline").exists() else ""
                yield Finding("process", "critical", f"proc/{entry.name}",
                              f"running from {target} ({cmdline[:120]})")

    def _declared(self, ip: str, port: int) -> bool:
        return f"{ip}:{port}" in self.declared_endpoints or ip in self.declared_endpoints \
            or f":{port}" in self.declared_endpoints

    def _connections(self, _: ScanReport) -> Iterator[Finding]:
        for name in ("tcp", "tcp6"):
            for ip, port, state in _parse_proc_net(self.root / "proc" / "net" / name):
                if state != "01":  # ESTABLISHED only; listening sockets are the APIs
                    continue
                addr = ipaddress.ip_address(ip)
                if addr.is_loopback or (addr.is_unspecified):
                    continue
                if port in IOC_PORTS:
                    yield Finding("egress", "critical", f"proc/net/{name}", f"{ip}:{port}: {IOC_PORTS[port]}")
                elif not self._declared(ip, port):
                    yield Finding("egress", "high", f"proc/net/{name}",
                                  f"connection to undeclared endpoint {ip}:{port}")
