"""Signed updates (security test list items 1-5): TUF metadata through python-tuf, A/B slots, revert."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest

from openmos.security.release import ReleaseRepository, generate_keys
from openmos.security.update import DeviceUpdater, SlotInstaller, UpdateRejected


def bundle(tmp: Path, name: str, version: str, files: dict[str, bytes] | None = None,
           evil: tarfile.TarInfo | None = None) -> Path:
    path = tmp / name
    with tarfile.open(path, "w:gz") as tar:
        for fname, data in {"VERSION": version.encode(), "bin/openmos-agent": b"#!agent " + version.encode(),
                            **(files or {})}.items():
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if evil is not None:
            tar.addfile(evil, io.BytesIO(b"x" * evil.size) if evil.size else None)
    return path


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.keys = tmp / "keys"
        generate_keys(self.keys)
        self.repo = ReleaseRepository(tmp / "repo", self.keys)
        self.root = self.repo.init().read_bytes()
        self.device = tmp / "device"

    def publish(self, version: str, **kw: object) -> str:
        name = f"openmos-{version}.tar.gz"
        self.repo.publish(bundle(self.tmp, name, version, **kw), custom={"version": version})  # type: ignore[arg-type]
        return name

    def updater(self) -> DeviceUpdater:
        return DeviceUpdater(self.device, f"file://{self.tmp / 'repo'}", self.root, SlotInstaller(self.device))


def healthy(slot: Path) -> bool:
    return (slot / "bin" / "openmos-agent").exists()


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_signed_update_installs_into_the_other_slot(env: Env) -> None:
    name = env.publish("1.1.0")
    updater = env.updater()
    assert updater.install(name, healthy) == "b"
    assert (env.device / "slots" / "b" / "VERSION").read_text() == "1.1.0"
    name2 = env.publish("1.2.0")
    assert env.updater().install(name2, healthy) == "a"


def test_1_unsigned_image_rejected(env: Env) -> None:
    env.publish("1.1.0")
    shutil.copy(bundle(env.tmp, "rogue.tar.gz", "6.6.6"), env.tmp / "repo" / "targets" / "rogue.tar.gz")
    with pytest.raises(UpdateRejected, match="not a signed, current release"):
        env.updater().install("rogue.tar.gz", healthy)


def test_1_tampered_image_rejected(env: Env) -> None:
    name = env.publish("1.1.0")
    target = env.tmp / "repo" / "targets" / name
    shutil.copy(bundle(env.tmp, "evil.tar.gz", "1.1.0", files={"bin/miner": b"pool=evil"}), target)
    with pytest.raises(UpdateRejected, match="failed verification"):
        env.updater().install(name, healthy)
    assert not (env.device / "slots" / "b").exists()


def test_1_wrongly_signed_metadata_rejected(env: Env, tmp_path: Path) -> None:
    name = env.publish("1.1.0")
    other_keys = tmp_path / "other-keys"
    generate_keys(other_keys)
    env.repo.key_dir = other_keys  # an attacker's keys, not in the device's root
    env.publish("1.2.0")
    with pytest.raises(UpdateRejected, match="update metadata refused"):
        env.updater().install(name, healthy)


def test_1_metadata_edited_after_signing_rejected(env: Env) -> None:
    name = env.publish("1.1.0")
    path = env.tmp / "repo" / "metadata" / "targets.json"
    doc = json.loads(path.read_text())
    doc["signed"]["targets"][name]["length"] += 1
    path.write_text(json.dumps(doc))
    with pytest.raises(UpdateRejected):
        env.updater().install(name, healthy)


def test_1_expired_metadata_rejected(env: Env) -> None:
    name = env.publish("1.1.0")
    env.repo.refresh_timestamp(expires_in=timedelta(seconds=-60))
    with pytest.raises(UpdateRejected, match="Expired"):
        env.updater().install(name, healthy)


def test_1_revoked_image_rejected(env: Env) -> None:
    name = env.publish("1.1.0")
    env.repo.revoke(name)
    with pytest.raises(UpdateRejected, match="unknown or revoked"):
        env.updater().install(name, healthy)


def test_2_replayed_older_release_rejected(env: Env) -> None:
    old = env.publish("1.1.0")
    saved = env.tmp / "saved-metadata"
    shutil.copytree(env.tmp / "repo" / "metadata", saved)
    new = env.publish("1.2.0")
    assert env.updater().install(new, healthy) == "b"
    # The attacker replays the old, validly signed metadata and bundle.
    shutil.rmtree(env.tmp / "repo" / "metadata")
    shutil.copytree(saved, env.tmp / "repo" / "metadata")
    with pytest.raises(UpdateRejected, match="update metadata refused"):
        env.updater().install(old, healthy)
    # And even a newly signed listing of an older version is refused by the slot manager.
    env2 = env.updater()
    with pytest.raises(UpdateRejected):
        env2.slots.install(bundle(env.tmp, "x.tar.gz", "1.0.0"), "x.tar.gz", "1.0.0")


def test_3_freeze_attack_rejected(env: Env) -> None:
    """A mirror that stops updating keeps serving the same metadata until the timestamp expires."""
    name = env.publish("1.1.0")
    env.updater().refresh()
    env.repo.refresh_timestamp(expires_in=timedelta(seconds=-1))  # what the frozen mirror now serves
    with pytest.raises(UpdateRejected, match="Expired"):
        env.updater().install(name, healthy)


def test_3_mix_and_match_rejected(env: Env) -> None:
    env.publish("1.1.0")
    old_targets = (env.tmp / "repo" / "metadata" / "targets.json").read_bytes()
    name = env.publish("1.2.0")
    (env.tmp / "repo" / "metadata" / "targets.json").write_bytes(old_targets)  # valid but from another release
    with pytest.raises(UpdateRejected, match="update metadata refused"):
        env.updater().install(name, healthy)


def test_4_failed_health_check_reverts(env: Env) -> None:
    name = env.publish("1.1.0")
    updater = env.updater()
    assert updater.install(name, lambda slot: False) == "a"
    assert "failed its health check" in updater.slots.state.history[-1]
    # A slot that never confirms (crashes on every boot) is dropped after max_attempts boots.
    slots = SlotInstaller(env.tmp / "other")
    slots.install(bundle(env.tmp, "y.tar.gz", "2.0.0"), "y.tar.gz", "2.0.0")
    assert slots.boot_slot() == "b" and slots.boot_slot() == "b"
    assert slots.boot_slot() == "a"
    assert "never confirmed" in slots.state.history[-1]


@pytest.mark.parametrize("evil_name", ["../tuf/root.json", "/etc/openmos/root.json", "bin/../../tuf/root.json"])
def test_5_payload_cannot_overwrite_trust_root(env: Env, evil_name: str) -> None:
    info = tarfile.TarInfo(evil_name)
    info.size = 3
    name = env.publish("1.1.0", evil=info)
    updater = env.updater()
    trusted = (env.device / "tuf" / "root.json").read_bytes() if (env.device / "tuf" / "root.json").exists() \
        else None
    with pytest.raises(UpdateRejected, match="outside the slot"):
        updater.install(name, healthy)
    after = (env.device / "tuf" / "root.json").read_bytes()
    assert trusted is None or after == trusted
    assert json.loads(after)["signed"]["_type"] == "root"


def test_5_links_in_payload_refused(env: Env) -> None:
    info = tarfile.TarInfo("bin/root-link")
    info.type = tarfile.SYMTYPE
    info.linkname = "../../tuf/root.json"
    info.size = 0
    name = env.publish("1.1.0", evil=info)
    with pytest.raises(UpdateRejected, match="link"):
        env.updater().install(name, healthy)


def test_root_rotation_is_followed_and_old_keys_stop_working(env: Env, tmp_path: Path) -> None:
    env.publish("1.1.0")
    env.updater().refresh()
    new_keys = tmp_path / "new-keys"
    generate_keys(new_keys)
    old_keys = env.repo.key_dir
    env.repo.rotate_root(new_keys)
    name = env.publish("1.2.0")
    assert env.updater().install(name, healthy) == "b"
    env.repo.key_dir = old_keys  # a thief with the retired keys
    env.publish("1.3.0")
    with pytest.raises(UpdateRejected):
        env.updater().install("openmos-1.3.0.tar.gz", healthy)


# -- issue 12: versions, bad inputs, the real health gate ---------------------------------------------------


@pytest.mark.parametrize("version", ["latest", "1.2-rc1", "-1", "1..2", "", "1.2.3.4.5", "9" * 12, "v1.0"])
def test_unorderable_version_refused_at_signing(env: Env, version: str) -> None:
    """`mos release sign --version latest` used to be signed, then blocked every later update."""
    with pytest.raises(ValueError, match="dotted numbers"):
        env.publish(version)
    assert json.loads((env.tmp / "repo" / "metadata" / "targets.json").read_text())["signed"]["targets"] == {}
    # A later real release still installs.
    assert env.updater().install(env.publish("1.1.0"), healthy) == "b"


def test_cli_release_sign_refuses_latest_in_one_line(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    from openmos.cli.main import main

    path = bundle(env.tmp, "b.tar.gz", "1.0.0")
    assert main(["release", "sign", str(path), "--version", "latest", "--repo", str(env.tmp / "repo"),
                 "--keys", str(env.keys)]) == 2
    err = capsys.readouterr().err
    assert "dotted numbers" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_device_refuses_a_signed_release_without_an_orderable_version(env: Env) -> None:
    """Metadata signed before versions were validated (custom version 'latest') must not block updates."""
    path = bundle(env.tmp, "old.tar.gz", "latest")
    env.repo.publish(path, custom={"version": "1.0.0"})
    targets = env.tmp / "repo" / "metadata" / "targets.json"
    from tuf.api.metadata import Metadata

    md = Metadata.from_file(str(targets))
    md.signed.targets["old.tar.gz"].unrecognized_fields["custom"] = {"version": "latest"}  # type: ignore[attr-defined]
    env.repo._write(md, "targets.json", "targets")
    env.repo._publish_snapshot()
    with pytest.raises(UpdateRejected, match="dotted numbers"):
        env.updater().install("old.tar.gz", healthy)
    assert not (env.device / "slots" / "b").exists()
    # A device whose state already says "latest" (written by an older OpenMOS) still takes a real update.
    slots = SlotInstaller(env.device)
    slots.state.installed["a"] = {"target": "old.tar.gz", "version": "latest"}
    slots._save()
    assert env.updater().install(env.publish("1.2.0"), healthy) == "b"


def test_signing_a_bundle_that_is_not_a_tar_is_refused(env: Env) -> None:
    junk = env.tmp / "junk.tar.gz"
    junk.write_bytes(b"MZ\x90\x00 this is a windows executable, not a slot tree")
    with pytest.raises(ValueError, match="not a tar archive"):
        env.repo.publish(junk, custom={"version": "1.1.0"})


def test_installing_a_signed_bundle_that_is_not_a_tar_is_one_clean_rejection(env: Env) -> None:
    junk = env.tmp / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 300)  # gzip magic, then garbage
    env.repo.targets_dir.mkdir(parents=True, exist_ok=True)
    # Bypass the publisher's check: an older or hostile release server signed it anyway.
    shutil.copy(junk, env.repo.targets_dir / "junk.tar.gz")
    from tuf.api.metadata import Metadata, TargetFile

    md = Metadata.from_file(str(env.tmp / "repo" / "metadata" / "targets.json"))
    target = TargetFile.from_file("junk.tar.gz", str(env.repo.targets_dir / "junk.tar.gz"))
    target.unrecognized_fields["custom"] = {"version": "1.1.0"}
    md.signed.targets["junk.tar.gz"] = target  # type: ignore[attr-defined]
    md.signed.version += 1
    env.repo._write(md, "targets.json", "targets")
    env.repo._publish_snapshot()
    with pytest.raises(UpdateRejected, match="not a readable tar archive"):
        env.updater().install("junk.tar.gz", healthy)
    assert env.updater().slots.state.active == "a"


@pytest.mark.parametrize("root_bytes", [b"not json at all", b"[1, 2]", b'{"signed": {"_type": "root"}}', b"\xff\xfe"])
def test_root_of_trust_that_is_not_json_is_one_clean_rejection(env: Env, root_bytes: bytes) -> None:
    with pytest.raises(UpdateRejected, match="root of trust is not valid"):
        DeviceUpdater(env.tmp / "dev2", f"file://{env.tmp / 'repo'}", root_bytes, SlotInstaller(env.tmp / "dev2"))


def test_cli_update_bad_inputs_are_one_line_errors(env: Env, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from openmos.cli.main import main
    from openmos.miner import AgentConfig

    cfg = tmp_path / "agent.toml"
    AgentConfig.from_dict({"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "me"}]}]}).save(cfg)
    name = env.publish("1.1.0")
    bad_root = tmp_path / "root.json"
    bad_root.write_bytes(b"<html>not json</html>")
    common = ["--repo", str(env.tmp / "repo"), "--state", str(tmp_path / "st"), "--agent-config", str(cfg)]
    assert main(["update", name, "--root-of-trust", str(bad_root), *common]) == 1
    err = capsys.readouterr().err
    assert "root of trust is not valid" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 1000)
    assert main(["release", "sign", str(junk), "--version", "1.2.0", "--repo", str(env.tmp / "repo"),
                 "--keys", str(env.keys)]) == 2
    err = capsys.readouterr().err
    assert "not a tar archive" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


SRC_PACKAGE = Path(__file__).parents[1] / "src" / "openmos"


def agent_bundle(tmp: Path, name: str, version: str, script: str | None = None) -> Path:
    """A slot tree with a real OpenMOS agent (this source tree under lib/) started by bin/openmos-agent."""
    import sys

    path = tmp / name
    launcher = script or ('#!/bin/sh\nPYTHONPATH="$(dirname "$0")/../lib" exec ' + sys.executable
                          + ' -m openmos.cli.main "$@"\n')
    with tarfile.open(path, "w:gz") as tar:
        for fname, data, mode in (("VERSION", version.encode(), 0o644),
                                  ("bin/openmos-agent", launcher.encode(), 0o755)):
            info = tarfile.TarInfo(fname)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        tar.add(SRC_PACKAGE, arcname="lib/openmos",
                filter=lambda ti: None if "__pycache__" in ti.name or ti.issym() else ti)
    return path


class GateEnv:
    """A release repository, a local pool and the device's agent config pointing at it."""

    def __init__(self, env: Env, pool_url: str) -> None:
        from helpers import agent_config

        self.env = env
        self.config = env.tmp / "agent.toml"
        agent_config(pool_url, user="owner.rig1").save(self.config)
        self.pool_url = pool_url

    def publish(self, version: str, script: str | None = None) -> str:
        name = f"openmos-{version}.tar.gz"
        self.env.repo.publish(agent_bundle(self.env.tmp, name, version, script), custom={"version": version})
        return name

    def gate(self, deadline_s: float) -> object:
        from openmos.security.health import AgentHealthGate

        return AgentHealthGate(self.config, {self.pool_url}, deadline_s=deadline_s, log_dir=self.env.tmp / "logs")


async def test_health_gate_commits_a_slot_whose_agent_hashes_and_reaches_its_pool(env: Env) -> None:
    import asyncio

    from openmos.pool import LocalPool

    from helpers import easy_pool_settings

    pool = LocalPool(easy_pool_settings(start_difficulty=0.00003))
    await pool.start()
    try:
        genv = GateEnv(env, pool.url)
        name = genv.publish("1.1.0")
        gate = genv.gate(180)
        updater = env.updater()
        active = await asyncio.to_thread(updater.install, name, gate)  # type: ignore[arg-type]
        assert active == "b", updater.slots.state.history
        assert gate.last is not None and gate.last.healthy and gate.last.accepted >= 1  # type: ignore[attr-defined]
        # The work really reached the pool, from the owner's worker.
        assert pool.workers["owner.rig1"].accepted >= 1
        assert "healthy: now active" in updater.slots.state.history[-1]
    finally:
        await pool.stop()


async def test_health_gate_reverts_a_slot_whose_agent_cannot_reach_its_pool(env: Env) -> None:
    import asyncio

    from openmos.base.net import free_local_port

    genv = GateEnv(env, f"stratum+tcp://127.0.0.1:{free_local_port()}")  # nothing listens there
    name = genv.publish("1.1.0")
    gate = genv.gate(8)
    updater = env.updater()
    assert await asyncio.to_thread(updater.install, name, gate) == "a"  # type: ignore[arg-type]
    history = " ".join(updater.slots.state.history)
    assert "failed its health check" in history and "not healthy within 8 s" in history, history


async def test_health_gate_reverts_a_crashing_agent_and_an_empty_slot(env: Env) -> None:
    import asyncio

    genv = GateEnv(env, "stratum+tcp://127.0.0.1:1")
    name = genv.publish("1.1.0", "#!/bin/sh\necho 'new driver: cannot open /dev/axi_fpga' >&2\nexit 3\n")
    gate = genv.gate(120)
    updater = env.updater()
    assert await asyncio.to_thread(updater.install, name, gate) == "a"  # type: ignore[arg-type]
    assert gate.last is not None and "exited with code 3" in gate.last.reason  # type: ignore[attr-defined]
    assert "cannot open /dev/axi_fpga" in gate.last.reason  # type: ignore[attr-defined]
    # The old "health check" passed any non-empty slot: a slot without an agent must fail.
    env.repo.publish(bundle(env.tmp, "openmos-1.2.0.tar.gz", "1.2.0"), custom={"version": "1.2.0"})
    gate2 = genv.gate(120)
    assert await asyncio.to_thread(env.updater().install, "openmos-1.2.0.tar.gz", gate2) == "a"  # type: ignore[arg-type]
    assert "no executable bin/openmos-agent" in gate2.last.reason  # type: ignore[attr-defined]


async def test_health_gate_reverts_an_agent_that_mines_for_another_pool(env: Env) -> None:
    """A release that hashes fine but for someone else's pool is the hijack the gate must stop."""
    import asyncio
    import sys

    from openmos.pool import LocalPool

    from helpers import easy_pool_settings

    owner, thief = (LocalPool(easy_pool_settings(start_difficulty=0.00003)) for _ in range(2))
    await owner.start()
    await thief.start()
    try:
        genv = GateEnv(env, owner.url)
        # Ignores the device config; keeps the API port the gate gave it ($5) so it looks fine there.
        script = ('#!/bin/sh\nPYTHONPATH="$(dirname "$0")/../lib" exec ' + sys.executable + " -m openmos.cli.main run "
                  f'--hardware cpu:1 --suggest-difficulty 0 --pool {thief.url} --user thief.1 --api-port "$5" '
                  '--rest-port 0 --no-status\n')
        name = genv.publish("1.1.0", script)
        gate = genv.gate(180)
        updater = env.updater()
        assert await asyncio.to_thread(updater.install, name, gate) == "a"  # type: ignore[arg-type]
        assert gate.last is not None and gate.last.foreign, gate.last  # type: ignore[attr-defined]
        assert "does not list" in gate.last.reason  # type: ignore[attr-defined]
    finally:
        await owner.stop()
        await thief.stop()


async def test_agent_is_not_healthy_merely_because_it_is_not_paused(tmp_path: Path) -> None:
    from openmos.base.net import free_local_port
    from openmos.fleet.workers.openmos import AgentWorker
    from openmos.pool import LocalPool

    from helpers import cpu_agent, easy_pool_settings, wait_for

    agent = cpu_agent(f"stratum+tcp://127.0.0.1:{free_local_port()}", user="me")
    await agent.start()
    try:
        status = AgentWorker(agent, "d1").status()
        assert not status["paused"] and not status["healthy"]
    finally:
        await agent.stop()
    pool = LocalPool(easy_pool_settings(start_difficulty=0.00003))
    await pool.start()
    agent = cpu_agent(pool.url, user="me")
    worker = AgentWorker(agent, "d2")
    await agent.start()
    try:
        await wait_for(lambda: bool(worker.status()["healthy"]), 60, "a hashing agent with a live pool")
        await agent.pause()
        assert not worker.status()["healthy"]
    finally:
        await agent.stop()
        await pool.stop()


def test_trial_agent_does_not_take_the_devices_mqtt_identity(tmp_path: Path) -> None:
    """A second MQTT client with the device's id would knock the running agent off the broker."""
    import stat
    import tomllib

    from openmos.miner import AgentConfig
    from openmos.security.health import AgentHealthGate

    cfg = tmp_path / "agent.toml"
    AgentConfig.from_dict({"groups": [{"pools": [{"url": "stratum+tcp://127.0.0.1:1", "user": "me",
                                                  "password": "pool-pass"}]}],
                           "mqtt": {"host": "127.0.0.1", "device_id": "rig"}}).save(cfg)
    trial = AgentHealthGate(cfg, {"stratum+tcp://127.0.0.1:1"})._trial_config(tmp_path)
    doc = tomllib.loads(trial.read_text())
    assert "mqtt" not in doc and doc["groups"][0]["pools"][0]["user"] == "me"
    assert stat.S_IMODE(trial.stat().st_mode) == 0o600
