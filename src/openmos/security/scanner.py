"""Integrity and malware scanner for a miner's filesystem (``mos scan``).

It scans a *root directory* (``/`` on a device, a fake tree in tests) for: known indicators of compromise
from real miner malware, look-alike configuration files, persistence points, changes against a signed
baseline, processes running from temporary directories, and established connections to endpoints nobody
declared. Findings carry a severity and a reason; nothing is deleted, the operator decides.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmos.base.url import normal_host, normal_ip, split_endpoint
from openmos.security.persistence import CLASSES, SUSPICIOUS, PersistenceClass
from openmos.security.rootfs import RootFS, printable
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
POOL_CONFIGS = ("config/cgminer.conf", "config/bmminer.conf", "etc/cgminer.conf", "etc/bmminer.conf",
                "opt/cgminer.conf", "opt/bmminer.conf")
DNSMASQ_FILES = ("etc/dnsmasq.conf", "etc/dnsmasq.d/*")
BASELINE_DIRS = ("usr/bin", "usr/sbin", "bin", "sbin", "lib", "etc", "config", "opt/openmos")
TEMP_DIRS = ("tmp", "var/tmp", "dev/shm")
SEVERITY_ORDER = {"critical": 3, "high": 2, "medium": 1, "info": 0}
HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$")


def _host_text(host: str) -> str:
    """A host name or address taken from a hostile file, shown only if it is one."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower() if HOSTNAME.match(host) else "<not a host name>"


def _ioc_host(host: str) -> str | None:
    host = host.lower().rstrip(".")
    for bad, why in IOC_HOSTS.items():
        if host == bad or host.endswith("." + bad):
            return why
    return None


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


def build_baseline(root: Path, dirs: tuple[str, ...] = BASELINE_DIRS) -> dict[str, Any]:
    """Hashes of every regular file (and the target of every link) under ``dirs`` and at every persistence
    point; sign it with signing.sign_document."""
    fs = RootFS(root)
    files: dict[str, str] = {}
    for rel_dir in dirs:
        for rel, _st in fs.walk(rel_dir):
            digest = fs.digest(rel)
            if digest is not None:
                files[rel] = digest
    for rel in _persistence_points(fs):  # persistence points outside those dirs (e.g. ~/.ssh) too
        digest = fs.digest(rel)
        if digest is not None:
            files[rel] = digest
    return {"created": int(time.time()), "dirs": list(dirs), "files": files}


def _persistence_points(fs: RootFS) -> Iterator[str]:
    seen: set[str] = set()
    for cls in CLASSES:
        for pattern in cls.patterns:
            for rel in fs.glob(pattern):
                if rel not in seen:
                    seen.add(rel)
                    yield rel


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _parse_proc_net(text: str) -> Iterator[tuple[str, int, str]]:
    """(remote ip, remote port, state hex) from /proc/net/tcp or tcp6; malformed lines are skipped."""
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4 or parts[2].count(":") != 1:
            continue
        addr_hex, port_hex = parts[2].split(":")
        try:
            raw = bytes.fromhex(addr_hex)
            port = int(port_hex, 16)
        except ValueError:
            continue
        if len(raw) == 4:
            ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
        elif len(raw) == 16:  # tcp6: four little-endian 32-bit words
            ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        else:
            continue
        if 0 <= port <= 65535:
            yield ip, port, parts[3]


@dataclass
class Scanner:
    """Scan ``root``. ``declared_endpoints`` are the pools and services this device may talk to:
    ``host``, ``host:port``, ``[v6]:port`` or ``:port`` (any host on that port)."""

    root: Path
    baseline: dict[str, Any] | None = None
    declared_endpoints: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.fs = RootFS(self.root)
        self._declared: set[tuple[str, int | None]] = set()
        for entry in self.declared_endpoints:
            try:
                self._declared.add(split_endpoint(entry))
            except ValueError as exc:
                raise ValueError(f"declared endpoint {entry!r}: {exc}") from None
        self._known: dict[str, str] = dict((self.baseline or {}).get("files", {}))

    @classmethod
    def with_signed_baseline(cls, root: Path, envelope: dict[str, Any], public_pem: bytes,
                             declared_endpoints: set[str] | None = None) -> Scanner:
        baseline = verify_document(envelope, public_pem)
        if not isinstance(baseline.get("files"), dict):
            raise ValueError("the signed baseline has no file list")
        return cls(root, baseline, declared_endpoints or set())

    def scan(self) -> ScanReport:
        report = ScanReport(str(self.root))
        for check in (self._iocs, self._hosts, self._dnsmasq, self._lookalikes, self._pool_configs,
                      self._oversize, self._persistence, self._temp_executables, self._baseline,
                      self._processes, self._connections):
            report.findings.extend(check(report))
        return report

    def _unchanged(self, rel: str) -> bool:
        """True when a baseline is loaded and ``rel`` is in it with the same content (or link target)."""
        return rel in self._known and self._known[rel] == self.fs.digest(rel)

    def declared(self, host: str, port: int | None) -> bool:
        """Whether ``host:port`` is one of the declared endpoints, however either is spelt (case, trailing dot,
        IPv4-mapped IPv6, a URL's scheme or slash: see ``openmos.base.url``)."""
        try:
            host = normal_host(host)
        except ValueError:
            return False
        return any((h == host and p in (None, port)) or (h == "" and p == port) for h, p in self._declared)

    # -- checks ---------------------------------------------------------------------------------------

    def _iocs(self, _: ScanReport) -> Iterator[Finding]:
        for rel, why in IOC_FILES.items():
            if self.fs.lstat(rel) is not None:
                yield Finding("ioc-file", "critical", rel, why)

    def _hosts(self, _: ScanReport) -> Iterator[Finding]:
        for rel in ("etc/hosts", "etc/resolv.conf"):
            text = self.fs.text(rel)
            if text is None:
                continue
            for n, line in enumerate(text.splitlines(), 1):
                for word in line.split("#", 1)[0].lower().split()[1:]:
                    why = _ioc_host(word)
                    if why:
                        yield Finding("ioc-host", "critical", f"{rel}:{n}", f"{_host_text(word)}: {why}")

    def _dnsmasq(self, _: ScanReport) -> Iterator[Finding]:
        """``address=/domain/ip`` and ``server=/domain/ip`` answer a name with the attacker's choice."""
        for pattern in DNSMASQ_FILES:
            for rel in self.fs.glob(pattern):
                text = self.fs.text(rel)
                if text is None:
                    continue
                signed = self._unchanged(rel)
                for n, line in enumerate(text.splitlines(), 1):
                    key, sep, value = line.split("#", 1)[0].strip().partition("=")
                    if not sep or key.strip() not in ("address", "server", "local") or not value.startswith("/"):
                        continue
                    fields = value.split("/")
                    domains, answer = [d for d in fields[1:-1] if d], fields[-1]
                    shown = ", ".join(_host_text(d) if d != "#" else "every name" for d in domains[:3]) or "?"
                    answer_text = _host_text(answer.split("#")[0]) if answer else "no answer (blocked)"
                    if any(_ioc_host(d) for d in domains):
                        yield Finding("dns-redirect", "critical", f"{rel}:{n}",
                                      f"dnsmasq redirects {shown} (a known malware host) to {answer_text}")
                    elif not signed:
                        state = "not in the signed baseline" if self.baseline is not None else "no baseline"
                        yield Finding("dns-redirect", "high", f"{rel}:{n}",
                                      f"dnsmasq answers {shown} with {answer_text} ({state}): pool and update "
                                      "names can be hijacked this way")

    def _lookalikes(self, _: ScanReport) -> Iterator[Finding]:
        for name in self.fs.listdir("config"):
            if name in KNOWN_CONFIGS:
                continue
            for known in KNOWN_CONFIGS:
                if _edit_distance(name.lower(), known) <= 2:
                    yield Finding("lookalike-config", "high", f"config/{printable(name)}",
                                  f"looks like {known} (malware hides pool settings in look-alike files)")
                    break

    def _pool_configs(self, _: ScanReport) -> Iterator[Finding]:
        """Stock cgminer/bmminer configs: every pool must be one the operator declared."""
        for rel in POOL_CONFIGS:
            data = self.fs.read(rel)
            if data is None:
                continue
            try:
                doc = json.loads(data)
            except (ValueError, RecursionError):
                yield Finding("pool-config", "medium", rel, "not valid JSON; the miner may ignore or misread it")
                continue
            pools = doc.get("pools") if isinstance(doc, dict) else None
            for i, pool in enumerate(pools if isinstance(pools, list) else []):
                url = pool.get("url") if isinstance(pool, dict) else None
                if not isinstance(url, str):
                    continue
                try:
                    host, port = split_endpoint(url if "://" in url else "stratum+tcp://" + url)
                except ValueError:
                    yield Finding("pool-config", "high", f"{rel}#pools[{i}]", "pool URL is malformed")
                    continue
                where = f"{_host_text(host)}:{port if port is not None else '?'}"
                why = _ioc_host(host)
                if why:
                    yield Finding("pool-config", "critical", f"{rel}#pools[{i}]", f"pool {where}: {why}")
                elif not self._declared:
                    yield Finding("pool-config", "medium", f"{rel}#pools[{i}]",
                                  f"pool {where} configured; declare your pools (--allow-endpoint) so a foreign "
                                  "one is reported as such")
                elif not self.declared(host, port):
                    yield Finding("pool-config", "high", f"{rel}#pools[{i}]",
                                  f"foreign pool {where}: not one of the declared endpoints (hashrate hijack)")

    def _oversize(self, _: ScanReport) -> Iterator[Finding]:
        for rel, limit in OVERSIZE.items():
            st = self.fs.lstat(rel)
            if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > limit:
                yield Finding("oversize-binary", "high", rel, f"{st.st_size} bytes > {limit} expected")

    def _persistence(self, _: ScanReport) -> Iterator[Finding]:
        for cls in CLASSES:
            seen: set[str] = set()
            for pattern in cls.patterns:
                for rel in self.fs.glob(pattern):
                    if rel in seen or self._unchanged(rel):
                        continue
                    seen.add(rel)
                    finding = self._persistence_finding(cls, rel)
                    if finding is not None:
                        yield finding

    def _persistence_finding(self, cls: PersistenceClass, rel: str) -> Finding | None:
        """Severity and reason for one persistence point that is not vouched for by a baseline. The file
        is described (line counts, link target), never quoted: it may be a link to a secret."""
        st = self.fs.lstat(rel)
        if st is None or stat.S_ISDIR(st.st_mode):
            return None
        check = f"persistence:{cls.name}"
        state = ("changed since" if rel in self._known else "not in") + " the signed baseline" \
            if self.baseline is not None else "no baseline to compare with"
        if stat.S_ISLNK(st.st_mode):
            target = self.fs.readlink(rel) or ""
            bad = bool(SUSPICIOUS.search(target))
            severity = "critical" if bad and self.baseline is not None else "high" if bad or self.baseline \
                is not None else "info"
            return Finding(check, severity, rel, f"{cls.what}: symbolic link to {printable(target)} ({state}; "
                                                 "not followed)")
        if not stat.S_ISREG(st.st_mode):
            return Finding(check, "high", rel, f"{cls.what}: not a regular file (FIFO, device or socket)")
        text = self.fs.text(rel) or ""
        lines = text.splitlines()
        active = [n for n, ln in enumerate(lines, 1) if cls.active(ln)]
        suspicious = [n for n in active if SUSPICIOUS.search(lines[n - 1])]
        if not active:
            return None
        detail = f"{cls.what}: {len(active)} active line(s)"
        if suspicious:
            detail += f", line(s) {', '.join(map(str, suspicious[:5]))} fetch or run code from a network or " \
                      "temporary location"
        if self.baseline is None:
            return Finding(check, "high" if suspicious else cls.unknown, rel, f"{detail} ({state}; review them)")
        return Finding(check, "critical" if suspicious else "high", rel, f"{detail} ({state})")

    def _temp_executables(self, _: ScanReport) -> Iterator[Finding]:
        """Nothing legitimate on a miner runs from world-writable scratch space."""
        for rel_dir in TEMP_DIRS:
            for rel, st in self.fs.walk(rel_dir):
                if not stat.S_ISREG(st.st_mode):
                    continue
                head = self.fs.read(rel, 4) or b""
                kind = "ELF binary" if head == b"\x7fELF" else "script" if head[:2] == b"#!" else None
                if kind is None and not st.st_mode & 0o111:
                    continue
                yield Finding("temp-executable", "critical" if kind == "ELF binary" else "high", rel,
                              f"{kind or 'executable file'} (mode {stat.filemode(st.st_mode)}, {st.st_size} bytes) "
                              "in a temporary directory")

    def _baseline(self, report: ScanReport) -> Iterator[Finding]:
        if self.baseline is None:
            return
        dirs = tuple(d for d in self.baseline.get("dirs", BASELINE_DIRS) if isinstance(d, str))
        seen = set()
        for rel_dir in dirs:
            for rel, _st in self.fs.walk(rel_dir):
                digest = self.fs.digest(rel)
                if digest is None:
                    continue
                seen.add(rel)
                report.files_hashed += 1
                if rel not in self._known:
                    yield Finding("integrity", "high", rel, "file not in the signed baseline")
                elif self._known[rel] != digest:
                    yield Finding("integrity", "critical", rel, "file differs from the signed baseline")
        for rel in sorted(set(self._known) - seen):
            try:
                if self.fs.lstat(rel) is None:  # persistence files outside ``dirs`` are checked separately
                    yield Finding("integrity", "medium", printable(rel), "file from the signed baseline is missing")
            except ValueError:
                continue

    def _processes(self, _: ScanReport) -> Iterator[Finding]:
        for name in self.fs.listdir("proc"):
            if not name.isdigit():
                continue
            target = self.fs.readlink(f"proc/{name}/exe")
            if target is None:
                continue
            if target.startswith(tuple(f"/{d}/" for d in TEMP_DIRS)) or target.endswith(" (deleted)"):
                yield Finding("process", "critical", f"proc/{name}", f"running from {printable(target)}")

    def _connections(self, _: ScanReport) -> Iterator[Finding]:
        for name in ("tcp", "tcp6"):
            text = self.fs.text(f"proc/net/{name}")
            for ip, port, state in _parse_proc_net(text or ""):
                if state != "01":  # ESTABLISHED only; listening sockets are the APIs
                    continue
                addr = normal_ip(ip)
                if addr is None or addr.is_loopback or addr.is_unspecified:
                    continue
                if port in IOC_PORTS:
                    yield Finding("egress", "critical", f"proc/net/{name}", f"{addr}:{port}: {IOC_PORTS[port]}")
                elif not self.declared(str(addr), port):
                    yield Finding("egress", "high", f"proc/net/{name}",
                                  f"connection to undeclared endpoint {addr}:{port}")
