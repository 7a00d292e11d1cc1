"""Device side of signed updates: verify with python-tuf, install into the inactive A/B slot, boot it on
trial, keep it only if the health check passes, otherwise revert.

What is refused (each raises :class:`UpdateRejected` saying why): metadata not signed by the keys the
trusted root names (or below threshold), expired metadata (a frozen mirror), metadata older than what the
device already trusts (rollback), snapshot/targets that do not belong together (mix-and-match), a bundle
whose hash or length differs, a bundle that is not (or no longer) listed, a version not newer than the
installed one, and archive entries that would land outside the slot (path traversal, links, devices).
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from tuf.api.exceptions import DownloadError, DownloadHTTPError, RepositoryError
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from openmos.base.files import atomic_write


class UpdateRejected(Exception):
    pass


class FileFetcher(FetcherInterface):
    """Serves ``file://`` URLs (a mounted release directory, USB stick, or a test fixture)."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = Path(unquote(urlparse(url).path))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DownloadHTTPError(f"{url} not found", 404) from None  # "no newer root" is a 404
        yield data


@dataclass
class SlotState:
    active: str = "a"
    trial: str | None = None
    attempts: int = 0
    installed: dict[str, dict[str, str]] = field(default_factory=dict)  # slot -> {target, version}
    history: list[str] = field(default_factory=list)


VERSION = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9}){0,3}$")


def parse_version(version: str) -> tuple[int, ...]:
    """``1.2.3`` -> (1, 2, 3). Anything else (``latest``, ``1.2-rc``, ``-1``) raises ValueError: versions are
    compared to refuse downgrades, so a name that cannot be ordered must never be signed or installed."""
    if not isinstance(version, str) or not VERSION.match(version):
        raise ValueError(f"version {str(version)[:40]!r} is not 1 to 4 dotted numbers (e.g. 0.2.0)")
    return tuple(int(p) for p in version.split("."))


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return parse_version(version)
    except ValueError as exc:
        raise UpdateRejected(f"bundle {exc}") from None


class SlotInstaller:
    """Two slots (a/b) under ``root``; a state file says which is active and which is on trial."""

    def __init__(self, root: Path, max_attempts: int = 2) -> None:
        self.root = root
        self.max_attempts = max_attempts
        self.state_path = root / "slots.json"
        self.state = SlotState(**json.loads(self.state_path.read_text())) if self.state_path.exists() \
            else SlotState()

    def _save(self) -> None:
        atomic_write(self.state_path, json.dumps(asdict(self.state), indent=1).encode())

    @property
    def inactive(self) -> str:
        return "b" if self.state.active == "a" else "a"

    def slot_dir(self, slot: str) -> Path:
        return self.root / "slots" / slot

    def installed_version(self) -> str | None:
        return self.state.installed.get(self.state.active, {}).get("version")

    def install(self, bundle: Path, target: str, version: str) -> str:
        """Unpack into the inactive slot and mark it for a trial boot."""
        new = _version_key(version)
        current = self.installed_version()
        if current is not None and not VERSION.match(current):  # written before versions were validated
            self.state.history.append(f"installed version {current[:40]!r} is not a version; ignored")
            current = None
        if current is not None and new <= _version_key(current):
            raise UpdateRejected(f"version {version} is not newer than installed {current} (downgrade refused)")
        slot = self.inactive
        dest = self.slot_dir(slot)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{slot}-", dir=self.root))
        try:
            safe_extract(bundle, staging)
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.state.installed[slot] = {"target": target, "version": version}
        self.state.trial, self.state.attempts = slot, 0
        self.state.history.append(f"installed {target} {version} into slot {slot} (trial)")
        self._save()
        return slot

    def boot_slot(self) -> str:
        """The slot to boot now. A trial slot gets ``max_attempts`` boots to confirm itself."""
        if self.state.trial is None:
            return self.state.active
        self.state.attempts += 1
        if self.state.attempts > self.max_attempts:
            self.state.history.append(f"slot {self.state.trial} never confirmed healthy: reverted")
            self.state.trial = None
            self._save()
            return self.state.active
        self._save()
        return self.state.trial

    def confirm(self, healthy: bool) -> str:
        """After booting the trial slot: keep it when healthy, revert otherwise. Returns the active slot."""
        if self.state.trial is None:
            return self.state.active
        if healthy:
            self.state.history.append(f"slot {self.state.trial} healthy: now active")
            self.state.active = self.state.trial
        else:
            self.state.history.append(f"slot {self.state.trial} failed its health check: reverted")
        self.state.trial = None
        self._save()
        return self.state.active


def safe_extract(bundle: Path, dest: Path) -> None:
    """Extract a .tar.gz refusing anything that could escape ``dest`` or is not a plain file/dir."""
    try:
        with tarfile.open(bundle, "r:*") as tar:
            for member in tar.getmembers():
                name = member.name
                target = (dest / name).resolve()
                if name.startswith("/") or ".." in Path(name).parts or not target.is_relative_to(dest.resolve()):
                    raise UpdateRejected(f"bundle entry {name!r} would be written outside the slot")
                if not (member.isfile() or member.isdir()):
                    raise UpdateRejected(f"bundle entry {name!r} is a link or device; refused")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise UpdateRejected(f"bundle {bundle.name} is not a readable tar archive ({type(exc).__name__})") from None


class DeviceUpdater:
    """Check, verify and install updates from a TUF repository for this device."""

    def __init__(self, state_dir: Path, repo_url: str, trusted_root: bytes, slots: SlotInstaller,
                 fetcher: FetcherInterface | None = None) -> None:
        self.meta_dir = state_dir / "tuf"
        self.download_dir = state_dir / "downloads"
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        self.repo_url = repo_url.rstrip("/")
        # The root the device ships with is the trust anchor; once a newer root is verified it replaces it
        # (only through the chain of signed roots, never from a bundle).
        bootstrap = (self.meta_dir / "root.json").read_bytes() if (self.meta_dir / "root.json").exists() \
            else trusted_root
        try:
            self._updater = Updater(str(self.meta_dir), f"{self.repo_url}/metadata/", str(self.download_dir),
                                    f"{self.repo_url}/targets/", fetcher=fetcher or FileFetcher(),
                                    bootstrap=bootstrap)
        except (RepositoryError, ValueError) as exc:
            raise UpdateRejected(f"the root of trust is not valid TUF root metadata (JSON signed by the release "
                                 f"root keys): {type(exc).__name__}") from None
        self.slots = slots

    def refresh(self) -> None:
        try:
            self._updater.refresh()
        except (RepositoryError, DownloadError) as exc:
            raise UpdateRejected(f"update metadata refused: {type(exc).__name__}: {exc}") from None

    def verify(self, target: str) -> tuple[Path, str, str]:
        """Download ``target`` and check it against the signed metadata: (path, version, sha256)."""
        self.refresh()
        info = self._updater.get_targetinfo(target)
        if info is None:
            raise UpdateRejected(f"{target!r} is not a signed, current release (unknown or revoked)")
        custom = info.unrecognized_fields.get("custom", {})
        version = str(custom.get("version", "")) if isinstance(custom, dict) else ""
        _version_key(version)  # before downloading: a release without an orderable version is refused
        try:
            path = Path(self._updater.download_target(info))
        except (RepositoryError, DownloadError) as exc:
            raise UpdateRejected(f"bundle {target!r} failed verification: {type(exc).__name__}: {exc}") from None
        return path, version, str(info.hashes.get("sha256", ""))

    def install(self, target: str, health_check: Callable[[Path], bool]) -> str:
        """Verify and install ``target``, trial-boot it and keep it only if ``health_check(slot_dir)`` passes
        (normally an :class:`~openmos.security.health.AgentHealthGate`)."""
        path, version, _ = self.verify(target)
        self.slots.install(path, target, version)
        slot = self.slots.boot_slot()
        ok = False
        try:
            ok = bool(health_check(self.slots.slot_dir(slot)))
        except Exception as exc:  # a crashing health check is a failed one
            self.slots.state.history.append(f"health check crashed: {type(exc).__name__}")
            ok = False
        reason = getattr(getattr(health_check, "last", None), "reason", None)
        if isinstance(reason, str):
            self.slots.state.history.append(f"health gate on slot {slot}: {reason}")
        return self.slots.confirm(ok)
