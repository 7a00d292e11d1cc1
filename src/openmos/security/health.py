"""The A/B health gate: start the trial slot's agent and keep the slot only if it proves itself.

A bundle is a directory tree with an executable ``bin/openmos-agent`` that accepts ``mos run`` arguments.
The gate starts it in its own process group with the device's agent config and a private cgminer API port
on 127.0.0.1, then polls that API (``summary`` and ``pools``). The slot is healthy only when, before the
deadline, the new agent reports a non-zero hashrate *and* a pool that the device config lists is Alive and
has accepted at least one share from it (an accepted share needs real SHA-256d work, so it proves both
"hashes" and "reaches its pool"). A new agent that exits, never answers, hashes for a pool nobody
configured, or cannot reach the configured one fails the gate; the process group is always stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w

from openmos.base.net import free_local_port
from openmos.security.rootfs import printable

API_TIMEOUT_S = 2.0
MAX_REPLY = 1 << 20


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    reason: str
    hashrate_mhs: float = 0.0
    accepted: int = 0
    pool: str | None = None
    foreign: bool = False


def _normal_url(url: str) -> str:
    return url.strip().rstrip("/").lower()


def cgminer_query(port: int, command: str, host: str = "127.0.0.1", timeout: float = API_TIMEOUT_S) -> dict[str, Any]:
    """One cgminer API command over TCP; the reply is bounded and must be a JSON object."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(json.dumps({"command": command}).encode())
        data = b""
        while len(data) < MAX_REPLY:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.endswith(b"\x00"):
                break
    doc = json.loads(data.rstrip(b"\x00"))
    if not isinstance(doc, dict):
        raise ValueError("cgminer reply is not an object")
    return doc


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if value == value and abs(value) < 1e30 else 0.0  # NaN and absurd figures count as 0


class AgentHealthGate:
    """Callable health check for :meth:`DeviceUpdater.install`: ``gate(slot_dir) -> bool``.

    ``config`` is the device's agent config (TOML) the new slot must run with; ``pools`` are the pool URLs
    that config lists (the only pools a healthy agent may report work to). ``last`` keeps the verdict.
    """

    def __init__(self, config: Path, pools: set[str], *, deadline_s: float = 90.0, poll_s: float = 0.5,
                 log_dir: Path | None = None) -> None:
        if not pools:
            raise ValueError("the health gate needs the pool URLs the device is configured for")
        self.config = config
        self.pools = {_normal_url(p) for p in pools}
        self.deadline_s = deadline_s
        self.poll_s = poll_s
        self.log_dir = log_dir
        self.last: HealthReport | None = None

    def __call__(self, slot: Path) -> bool:
        self.last = self.check(slot)
        return self.last.healthy

    def check(self, slot: Path) -> HealthReport:
        exe = slot / "bin" / "openmos-agent"
        if exe.is_symlink() or not exe.is_file() or not os.access(exe, os.X_OK):
            return HealthReport(False, f"slot has no executable bin/openmos-agent ({exe})")
        port = free_local_port()
        log_dir = self.log_dir or slot.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        config = self._trial_config(log_dir)
        argv = [str(exe), "run", "--config", str(config), "--api-port", str(port), "--rest-port", "0",
                "--api-host", "127.0.0.1", "--no-status"]
        with tempfile.NamedTemporaryFile(prefix="health-", suffix=".log", dir=log_dir, delete=False) as log:
            log_path = Path(log.name)
            proc = subprocess.Popen(argv, cwd=slot, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            report = self._watch(proc, port)
        finally:
            _stop(proc)
            with contextlib.suppress(OSError):
                config.unlink()
        if not report.healthy:
            tail = _last_line(log_path)
            if tail:
                report = replace(report, reason=f"{report.reason}; its last log line: {tail}")
        with contextlib.suppress(OSError):
            log_path.unlink()
        return report

    def _trial_config(self, directory: Path) -> Path:
        """The device config for the trial agent, without its MQTT identity (the running agent keeps the
        broker session and its last will; a second client with the same id would knock it off)."""
        doc = tomllib.loads(self.config.read_text(encoding="utf-8"))
        doc.pop("mqtt", None)
        fd, name = tempfile.mkstemp(prefix="trial-", suffix=".toml", dir=directory)  # 0600: pool passwords
        with os.fdopen(fd, "wb") as fh:
            fh.write(tomli_w.dumps(doc).encode())
        return Path(name)

    def _watch(self, proc: subprocess.Popen[bytes], port: int) -> HealthReport:
        deadline = time.monotonic() + self.deadline_s
        last = HealthReport(False, f"the new agent's API on 127.0.0.1:{port} never answered")
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                return HealthReport(False, f"the new agent exited with code {code} before proving itself")
            try:
                summary = cgminer_query(port, "summary")
                pools = cgminer_query(port, "pools")
            except (OSError, ValueError):
                time.sleep(self.poll_s)
                continue
            last = self._judge(summary, pools)
            if last.healthy or last.foreign:  # work sent to an unlisted pool is a hijack: no second chance
                return last
            time.sleep(self.poll_s)
        return HealthReport(False, f"not healthy within {self.deadline_s:g} s: {last.reason}", last.hashrate_mhs,
                            last.accepted, last.pool)

    def _judge(self, summary: dict[str, Any], pools: dict[str, Any]) -> HealthReport:
        rows = summary.get("SUMMARY")
        row = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], dict) else {}
        mhs = max(_number(row.get(k)) for k in ("MHS 5s", "MHS 1m", "MHS av"))
        pool_rows = pools.get("POOLS")
        foreign = None
        best: tuple[str, int] | None = None
        for p in pool_rows if isinstance(pool_rows, list) else []:
            if not isinstance(p, dict) or not isinstance(p.get("URL"), str):
                continue
            accepted = int(_number(p.get("Accepted")))
            if _normal_url(p["URL"]) not in self.pools:
                if accepted > 0:
                    foreign = p["URL"]
                continue
            if p.get("Status") == "Alive" and (best is None or accepted > best[1]):
                best = (p["URL"], accepted)
        if foreign is not None:
            return HealthReport(False, f"the new agent sends work to {printable(foreign)}, a pool the device "
                                       "config does not list", mhs, foreign=True)
        if mhs <= 0:
            return HealthReport(False, "the new agent reports no hashrate", mhs)
        if best is None:
            return HealthReport(False, "no configured pool is Alive for the new agent", mhs)
        if best[1] <= 0:
            return HealthReport(False, f"{printable(best[0])} has accepted no share from the new agent yet", mhs,
                                0, best[0])
        return HealthReport(True, f"hashing at {mhs:.3f} MH/s; {best[1]} share(s) accepted by {printable(best[0])}",
                            mhs, best[1], best[0])


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """Stop the trial agent and anything it started (its whole process group)."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # stragglers that ignored SIGTERM
        os.killpg(proc.pid, signal.SIGKILL)


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return printable(lines[-1].strip(), 200) if lines else ""
