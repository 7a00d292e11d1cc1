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
