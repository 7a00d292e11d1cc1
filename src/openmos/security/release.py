"""Release side of signed updates: a TUF repository (root, targets, snapshot, timestamp) in a directory.

Layout: ``<repo>/metadata/{N.root.json, timestamp.json, snapshot.json, targets.json}`` and
``<repo>/targets/<bundle>``. Keys are ed25519, kept as PEM files (0600) in a key directory, one per role;
``threshold`` signatures are needed per role. Timestamp metadata expires quickly so a frozen mirror is
noticed; every publish bumps versions so a replayed older release is refused.
"""

from __future__ import annotations

import shutil
import tarfile
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets
from tuf.api.metadata import Timestamp as TimestampRole
from tuf.api.serialization.json import JSONSerializer

from openmos.base.files import atomic_write
from openmos.base.pem import private_pem
from openmos.security.update import parse_version

ROLES = ("root", "targets", "snapshot", "timestamp")
EXPIRY = {"root": timedelta(days=365), "targets": timedelta(days=90), "snapshot": timedelta(days=7),
          "timestamp": timedelta(days=1)}


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def generate_keys(key_dir: Path, roles: tuple[str, ...] = ROLES, per_role: int = 1) -> None:
    """Create ``per_role`` ed25519 keys for each role as PEM files readable by the owner only."""
    key_dir.mkdir(parents=True, exist_ok=True)
    for role in roles:
        for i in range(per_role):
            key = Ed25519PrivateKey.generate()
            pem = private_pem(key)
            path = key_dir / f"{role}-{i}.pem"
            atomic_write(path, pem)
            path.chmod(0o600)


def load_signers(key_dir: Path, role: str) -> list[CryptoSigner]:
    signers = []
    for path in sorted(key_dir.glob(f"{role}-*.pem")):
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        signers.append(CryptoSigner(key, SSlibKey.from_crypto(key.public_key())))
    if not signers:
        raise FileNotFoundError(f"no {role} keys in {key_dir} (create them with `mos release init`)")
    return signers


def check_bundle(bundle: Path) -> None:
    """A bundle is a (gzipped) tar of the slot tree with an executable ``bin/openmos-agent``: refuse to sign
    anything else, since devices would only reject it after download."""
    try:
        with tarfile.open(bundle, "r:*") as tar:
            agent = next((m for m in tar.getmembers() if m.name.lstrip("./") == "bin/openmos-agent"), None)
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise ValueError(f"{bundle} is not a tar archive ({type(exc).__name__}); a bundle is a .tar.gz of the "
                         "slot tree") from None
    if agent is None or not agent.isfile():
        raise ValueError(f"{bundle} is not a tar archive of a slot: it has no bin/openmos-agent file")


class ReleaseRepository:
    def __init__(self, path: Path, key_dir: Path) -> None:
        self.path = path
        self.meta_dir = path / "metadata"
        self.targets_dir = path / "targets"
        self.key_dir = key_dir

    def _write(self, md: Metadata[Any], name: str, role: str) -> None:
        md.signatures.clear()
        for signer in load_signers(self.key_dir, role):
            md.sign(signer, append=True)
        atomic_write(self.meta_dir / name, md.to_bytes(JSONSerializer(compact=False)))

    def init(self, thresholds: dict[str, int] | None = None) -> Path:
        """Create version 1 of every role. Returns the root file to ship as the devices' trust anchor."""
        thresholds = thresholds or {}
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        root = Root(expires=_now() + EXPIRY["root"], consistent_snapshot=False)
        for role in ROLES:
            for signer in load_signers(self.key_dir, role):
                root.add_key(signer.public_key, role)
            root.roles[role].threshold = thresholds.get(role, 1)
        self._write(Metadata(root), "1.root.json", "root")
        self._write(Metadata(Targets(expires=_now() + EXPIRY["targets"])), "targets.json", "targets")
        self._publish_snapshot()
        return self.meta_dir / "1.root.json"

    def _load(self, name: str) -> Metadata[Any]:
        return Metadata.from_file(str(self.meta_dir / name))

    def _next_version(self, name: str, first: Snapshot | TimestampRole) -> Metadata[Any]:
        """The role's metadata one version up, or ``first`` (version 1) if there is none yet."""
        if not (self.meta_dir / name).exists():
            return Metadata(first)
        md = self._load(name)
        md.signed.version += 1
        return md

    def _publish_snapshot(self) -> None:
        targets = self._load("targets.json")
        snapshot = self._next_version("snapshot.json", Snapshot(expires=_now()))
        assert isinstance(snapshot.signed, Snapshot)
        snapshot.signed.meta["targets.json"] = MetaFile(version=targets.signed.version)
        snapshot.signed.expires = _now() + EXPIRY["snapshot"]
        self._write(snapshot, "snapshot.json", "snapshot")
        self.refresh_timestamp()

    def refresh_timestamp(self, expires_in: timedelta | None = None) -> None:
        """Re-sign the timestamp (a release server does this daily so devices can spot a frozen mirror)."""
        snapshot = self._load("snapshot.json")
        ts = self._next_version("timestamp.json", TimestampRole(expires=_now()))
        assert isinstance(ts.signed, TimestampRole)
        ts.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
        ts.signed.expires = _now() + (expires_in or EXPIRY["timestamp"])
        self._write(ts, "timestamp.json", "timestamp")

    def publish(self, bundle: Path, name: str | None = None, custom: dict[str, str] | None = None) -> TargetFile:
        """Sign ``bundle`` into the repository as target ``name`` (default: its file name)."""
        name = name or bundle.name
        if custom and "version" in custom:
            parse_version(custom["version"])  # "latest" would be signed, then block every later update
        check_bundle(bundle)
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"target name {name!r} must be a plain file name")
        dest = self.targets_dir / name
        shutil.copyfile(bundle, dest)
        target = TargetFile.from_file(name, str(dest))
        if custom:
            target.unrecognized_fields["custom"] = custom
        targets = self._load("targets.json")
        assert isinstance(targets.signed, Targets)
        targets.signed.targets[name] = target
        targets.signed.version += 1
        targets.signed.expires = _now() + EXPIRY["targets"]
        self._write(targets, "targets.json", "targets")
        self._publish_snapshot()
        return target

    def revoke(self, name: str) -> None:
        """Withdraw a target: devices will no longer accept it."""
        targets = self._load("targets.json")
        assert isinstance(targets.signed, Targets)
        targets.signed.targets.pop(name, None)
        targets.signed.version += 1
        self._write(targets, "targets.json", "targets")
        self._publish_snapshot()

    def rotate_root(self, new_key_dir: Path) -> None:
        """Publish root N+1 listing the keys in ``new_key_dir``, signed by the old and the new root keys."""
        names = sorted(p.name for p in self.meta_dir.glob("*.root.json"))
        current = self._load(max(names, key=lambda n: int(n.split(".")[0])))
        root = current.signed
        assert isinstance(root, Root)
        for role in ROLES:
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            for signer in load_signers(new_key_dir, role):
                root.add_key(signer.public_key, role)
        root.version += 1
        root.expires = _now() + EXPIRY["root"]
        md = Metadata(root)
        for signer in load_signers(self.key_dir, "root") + load_signers(new_key_dir, "root"):
            md.sign(signer, append=True)
        atomic_write(self.meta_dir / f"{root.version}.root.json", md.to_bytes(JSONSerializer(compact=False)))
        self.key_dir = new_key_dir
        targets = self._load("targets.json")  # re-sign the other roles with the new keys
        targets.signed.version += 1
        self._write(targets, "targets.json", "targets")
        self._publish_snapshot()
