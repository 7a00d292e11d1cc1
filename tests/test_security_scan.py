"""Scanner, desired pool state and hashrate reconciliation (security items 10-14, 17, 18)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from openmos.cli.main import main
from openmos.security.pools import enforce_pools
from openmos.security.reconcile import reconcile
from openmos.security.scanner import Scanner, build_baseline
from openmos.security.signing import SignatureError, generate_keypair, sign_document


def clean_tree(root: Path) -> Path:
    files = {
        "usr/bin/openmos-agent": b"#!/bin/sh\nexec python -m openmos\n",
        "usr/bin/ntpd": b"\x7fELF" + b"\0" * 400_000,
        "lib/modules/bitmain_axi.ko": b"\x7fELF module",
        "etc/hosts": b"127.0.0.1 localhost\n",
        "etc/resolv.conf": b"nameserver 10.0.0.1\n",
        "etc/rc.local": b"#!/bin/sh\nexit 0\n",
        "etc/crontab": b"# m h dom mon dow user command\n",
        "config/agent.toml": b'hardware = "cpu"\n',
        "config/cgminer.conf": b"{}",
        "root/.ssh/authorized_keys": b"ssh-ed25519 AAAAC3Nza owner@laptop\n",
        "proc/net/tcp": b"  sl  local_address rem_address   st\n"
                        b"   0: 0100007F:0FCC 00000000:0000 0A\n"
                        b"   1: 0200000A:9C40 0500000A:0D05 01\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "proc" / "1").mkdir(parents=True)
    os.symlink("/usr/bin/openmos-agent", root / "proc" / "1" / "exe")
    return root


def infect(root: Path) -> None:
    """Plant every indicator from the security reference."""
    for rel in ("etc/ld.so.preload", "usr/bin/build", "config/.antminers", "usr/bin/antminers", "nvdata/.shadow"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"evil")
    with (root / "etc/hosts").open("a") as fh:
        fh.write("203.0.113.7 bitmsfser.info\n203.0.113.8 auth.minerlink.com\n")
    (root / "config/bNminer.conf").write_text('{"pools":[{"url":"stratum+tcp://203.0.113.66:3333"}]}')
    (root / "usr/bin/ntpd").write_bytes(b"\x7fELF" + b"\0" * 3_000_000)
    (root / "lib/modules/bitmain_axi.ko").write_bytes(b"\x7fELF module patched")
    with (root / "etc/crontab").open("a") as fh:
        fh.write("*/5 * * * * root /usr/bin/antminers\n")
    (root / "etc/rc.local").write_text("#!/bin/sh\n/usr/bin/build &\nexit 0\n")
    with (root / "root/.ssh/authorized_keys").open("a") as fh:
        fh.write("ssh-rsa AAAAB3Nza attacker@botnet\n")
    (root / "proc" / "666").mkdir()
    os.symlink("/tmp/.x/kworker", root / "proc" / "666" / "exe")
    (root / "proc" / "666" / "cmdline").write_bytes(b"/tmp/.x/kworker\0-o\0stratum+tcp://evil:3333\0")
    with (root / "proc/net/tcp").open("a") as fh:
        fh.write("   2: 0200000A:9C41 0700710B:1B58 01\n")  # 11.113.0.7:7000 (Antbleed port)
        fh.write("   3: 0200000A:9C42 42007ACB:0D05 01\n")  # 203.122.0.66:3333 undeclared


@pytest.fixture
def keys(tmp_path: Path) -> tuple[bytes, bytes]:
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    return (tmp_path / "k.pem").read_bytes(), (tmp_path / "k.pub").read_bytes()


DECLARED = {"10.0.0.5:3333"}  # the user's pool


def test_clean_tree_has_no_findings(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    root = clean_tree(tmp_path / "fs")
    envelope = sign_document(build_baseline(root), keys[0])
    report = Scanner.with_signed_baseline(root, envelope, keys[1], DECLARED).scan()
    assert report.findings == []
    assert report.files_hashed >= 8


def test_10_to_13_and_18_every_seeded_indicator_is_found(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    root = clean_tree(tmp_path / "fs")
    envelope = sign_document(build_baseline(root), keys[0])
    infect(root)
    report = Scanner.with_signed_baseline(root, envelope, keys[1], DECLARED).scan()
    where = {(f.check, f.path.split(":")[0]) for f in report.findings}
    expected = {
        # 10 planted IOC files and hosts entries
        ("ioc-file", "etc/ld.so.preload"), ("ioc-file", "usr/bin/build"), ("ioc-file", "config/.antminers"),
        ("ioc-file", "usr/bin/antminers"), ("ioc-file", "nvdata/.shadow"), ("ioc-host", "etc/hosts"),
        ("lookalike-config", "config/bNminer.conf"), ("oversize-binary", "usr/bin/ntpd"),
        # 11 modified binaries fail the baseline
        ("integrity", "lib/modules/bitmain_axi.ko"), ("integrity", "usr/bin/ntpd"),
        # 12 new cron / rc.local / authorized_keys entries
        ("persistence", "etc/crontab"), ("persistence", "etc/rc.local"), ("persistence", "root/.ssh/authorized_keys"),
        # 13 process running from /tmp
        ("process", "proc/666"),
        # 18 non-allowlisted egress
        ("egress", "proc/net/tcp"),
    }
    assert expected <= where, expected - where
    hosts = {f.detail.split(":")[0] for f in report.by_check("ioc-host")}
    assert hosts == {"bitmsfser.info", "auth.minerlink.com"}
    egress = " ".join(f.detail for f in report.by_check("egress"))
    assert "Antbleed" in egress and "203.122.0.66:3333" in egress and "10.0.0.5" not in egress
    assert report.worst() == "critical"


def test_tampered_baseline_is_refused(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    root = clean_tree(tmp_path / "fs")
    envelope = sign_document(build_baseline(root), keys[0])
    envelope["signed"]["files"]["usr/bin/ntpd"] = "0" * 64  # the attacker "fixes" the baseline
    with pytest.raises(SignatureError):
        Scanner.with_signed_baseline(root, envelope, keys[1])


def test_mos_scan_cli_exit_codes(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    root = clean_tree(tmp_path / "fs")
    base = tmp_path / "baseline.json"
    assert main(["scan", "--root", str(root), "--make-baseline", str(base), "--key", str(tmp_path / "k.pem")]) == 0
    args = ["scan", "--root", str(root), "--baseline", str(base), "--pubkey", str(tmp_path / "k.pub"),
            "--allow-endpoint", "10.0.0.5:3333"]
    assert main(args) == 0
    infect(root)
    assert main(args) == 1


def test_14_on_device_pool_edit_is_restored(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    config = tmp_path / "agent.toml"
    good = {"hardware": "cpu", "groups": [{"name": "main", "quota": 1, "pools": [
        {"url": "stratum+tcp://10.0.0.5:3333", "user": "me.rig1", "password": "x"}]}]}
    config.write_text(tomli_w.dumps(good))
    desired = sign_document({"groups": [{"name": "main", "quota": 1, "pools": [
        {"url": "stratum+tcp://10.0.0.5:3333", "user": "me.rig1"}]}]}, keys[0])
    assert enforce_pools(config, desired, keys[1]) is None
    hijacked = json.loads(json.dumps(good))
    hijacked["groups"][0]["pools"][0] = {"url": "stratum+tcp://203.0.113.66:3333", "user": "thief.1", "password": "x"}
    config.write_text(tomli_w.dumps(hijacked))
    message = enforce_pools(config, desired, keys[1])
    assert message is not None and "thief.1" in message
    restored = config.read_text()
    assert "10.0.0.5" in restored and "203.0.113.66" not in restored and 'hardware = "cpu"' in restored
    # A desired state signed by someone else is not obeyed.
    forged = dict(desired, signed={"groups": hijacked["groups"]})
    with pytest.raises(SignatureError):
        enforce_pools(config, forged, keys[1])


def simulate_day(seed: int, diverted_minutes: int = 0, hours: float = 24.0, rate_ths: float = 200.0,
                 difficulty: float = 65536.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-minute device hashes and pool-accepted shares; the last ``diverted_minutes`` of every hour go
    to someone else's pool."""
    rng = np.random.default_rng(seed)
    minutes = int(hours * 60)
    device = np.full(minutes, rate_ths * 1e12 * 60)
    to_pool = device.copy()
    if diverted_minutes:
        to_pool[(np.arange(minutes) % 60) >= 60 - diverted_minutes] = 0
    shares = rng.poisson(to_pool / (difficulty * 2**32) * 0.99)  # ~1 % stale/rejected is normal
    return device, shares.astype(np.float64)


def test_17_five_minutes_in_sixty_diversion_is_caught_within_a_day() -> None:
    device, shares = simulate_day(seed=1, diverted_minutes=5)
    caught_at = None
    for hour in range(1, 25):
        result = reconcile(device[: hour * 60], shares[: hour * 60], 65536.0)
        if result.alert:
            caught_at = hour
            break
    assert caught_at is not None and caught_at <= 24
    final = reconcile(device, shares, 65536.0)
    assert final.periodic and 0.88 < final.ratio < 0.93


@pytest.mark.parametrize("seed", range(5))
def test_honest_pool_raises_no_alert(seed: int) -> None:
    device, shares = simulate_day(seed=seed)
    result = reconcile(device, shares, 65536.0)
    assert not result.alert, result.reason


async def test_agent_scans_on_schedule_and_restores_pools(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """The agent runs the scanner and the desired-pool check itself; REST shows the result."""
    import httpx

    from openmos.api.auth import AuthStore
    from openmos.api.rest import create_app
    from openmos.api.view import DeviceView
    from openmos.hw.cpu import CpuHardware
    from openmos.miner import AgentConfig, MiningAgent

    root = clean_tree(tmp_path / "fs")
    (tmp_path / "base.json").write_text(json.dumps(sign_document(build_baseline(root), keys[0])))
    (tmp_path / "k.pub").write_bytes(keys[1])
    infect(root)
    config_path = tmp_path / "agent.toml"
    good = {"groups": [{"name": "main", "quota": 1, "pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "me"}]}]}
    hijacked = {"groups": [{"name": "main", "quota": 1,
                            "pools": [{"url": "stratum+tcp://127.0.0.2:1", "user": "thief"}]}]}
    config_path.write_text(tomli_w.dumps(hijacked))
    (tmp_path / "desired.json").write_text(json.dumps(sign_document(good, keys[0])))
    config = AgentConfig.from_dict({**hijacked, "security": {
        "scan_root": str(root), "baseline": str(tmp_path / "base.json"), "pubkey": str(tmp_path / "k.pub"),
        "declared_endpoints": ["10.0.0.5:3333"], "desired_pools": str(tmp_path / "desired.json"),
        "config_path": str(config_path)}})
    agent = MiningAgent(config, CpuHardware())
    report = await agent.run_security_checks()
    assert report is not None and report.worst() == "critical"
    assert [c.endpoint.user for c in agent.pools.connections()] == ["me"]
    await agent.pools.stop()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(DeviceView(agent), AuthStore(None))),
                                 base_url="http://localhost") as client:
        doc = (await client.get("/api/v1/security")).json()
    assert doc["last_scan"]["worst"] == "critical" and doc["events"]


async def test_scan_runs_fleet_wide_as_a_bulk_action(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    from openmos.base.net import free_local_port
    from openmos.fleet.bus import BusConfig, FleetBus
    from openmos.fleet.control import FleetController, TargetQuery
    from openmos.fleet.enroll import EnrollmentRegistry
    from openmos.fleet.node import DeviceNode
    from openmos.fleet.workers.openmos import AgentWorker
    from openmos.hw.cpu import CpuHardware
    from openmos.miner import AgentConfig, MiningAgent

    roots = []
    workers = []
    for i in range(2):
        root = clean_tree(tmp_path / f"fs{i}")
        if i == 1:
            infect(root)
        roots.append(root)
        config = AgentConfig.from_dict({"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "x"}]}],
                                        "security": {"scan_root": str(root), "declared_endpoints": ["10.0.0.5"]}})
        workers.append(AgentWorker(MiningAgent(config, CpuHardware()), f"miner-{i}"))
    generate_keypair(tmp_path / "fleet.pem", tmp_path / "fleet.pub")
    bus = FleetBus(BusConfig(listen=[f"tcp/127.0.0.1:{free_local_port()}"]))
    await bus.open()
    nodes = [DeviceNode(bus, "lab", w, [(tmp_path / "fleet.pub").read_bytes()]) for w in workers]
    for node in nodes:
        await node.start()
    registry = EnrollmentRegistry(None)
    for node in nodes:
        registry.pin("lab", node.device.device_id, node.public_key)
    try:
        ctl = FleetController(bus, (tmp_path / "fleet.pem").read_bytes(), tmp_path / "audit.jsonl", registry=registry)
        req = ctl.request("scan", {}, TargetQuery(site="lab"), "alice")
        results = await ctl.execute(req.request_id, "alice")
        assert results["miner-0"]["ok"] and results["miner-0"]["worst"] in ("info", "medium")
        assert results["miner-1"]["ok"] and results["miner-1"]["worst"] == "critical"
    finally:
        for node in nodes:
            await node.stop()
        await bus.close()
