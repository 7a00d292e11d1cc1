"""Atomic writes (readers see the old file or the new one, never a torn one), durable appends, state directory,
TOML files read with one clear error for anything wrong in them."""

from __future__ import annotations

import contextlib
import os
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_TOML_BYTES = 1 << 20  # config files are a few kB


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document in ``path``. FileNotFoundError if missing; ValueError naming the file and what is wrong
    for anything else (not UTF-8, not TOML, over 1 MiB, nested too deep for the parser: tomllib recurses, and a
    file of 100,000 '[' ended in a RecursionError traceback)."""
    with path.open("rb") as fh:
        raw = fh.read(MAX_TOML_BYTES + 1)
    if len(raw) > MAX_TOML_BYTES:
        raise ValueError(f"{path}: larger than {MAX_TOML_BYTES} bytes; not a config file")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid TOML: arrays or tables nested too deep") from None


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def append_line(path: Path, line: bytes) -> None:
    """Append one record durably: one write on an O_APPEND descriptor, then fsync.

    An append-only log must not be rewritten per record (that costs the whole file each time: quadratic in
    the number of records); a crash can at worst leave a torn last line, which readers skip.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        # After a torn last line, start on a fresh line so the torn one does not swallow this record.
        lead = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
        os.write(fd, lead + line.rstrip(b"\n") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RotatingLog:
    """An append-only log of whole lines bounded in size: ``path`` plus at most ``keep`` older files
    ``path.1`` (newest) .. ``path.<keep>`` (oldest), each about ``max_bytes`` (one record over if a single record
    is bigger). Before an append that would take ``path`` past ``max_bytes``, the files shift by one with
    ``os.replace`` (atomic renames: a record is never split, only whole files move; the oldest falls off). A crash
    mid-rotation can leave a gap in the numbers, never a torn or reordered record: :meth:`lines` skips gaps."""

    path: Path
    max_bytes: int = 8 << 20
    keep: int = 5

    MIN_BYTES = 64 << 10  # a record may be ~16 kB: a smaller file would hold a handful
    MAX_BYTES = 1 << 30
    MAX_KEEP = 99

    def __post_init__(self) -> None:
        if not self.MIN_BYTES <= self.max_bytes <= self.MAX_BYTES:
            raise ValueError(f"log size limit must be {self.MIN_BYTES}..{self.MAX_BYTES} bytes, not {self.max_bytes}")
        if not 1 <= self.keep <= self.MAX_KEEP:
            raise ValueError(f"rotated log files to keep must be 1..{self.MAX_KEEP}, not {self.keep}")

    def _rotated(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def files(self) -> list[Path]:
        """The existing files, oldest first."""
        return [p for p in (*(self._rotated(i) for i in range(self.keep, 0, -1)), self.path) if p.exists()]

    def append(self, line: bytes) -> None:
        record = line.rstrip(b"\n") + b"\n"
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(record) + 1 > self.max_bytes:  # +1: the newline append_line may lead with
            self._rotate()
        append_line(self.path, record)

    def _rotate(self) -> None:
        for i in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self._rotated(i), self._rotated(i + 1))
        os.replace(self.path, self._rotated(1))
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the renames survive a power cut
        finally:
            os.close(dir_fd)

    def lines(self) -> Iterator[str]:
        """Every line, oldest file first (a file vanishing under a concurrent rotation is skipped)."""
        for p in self.files():
            try:
                text = p.read_text(errors="replace")
            except FileNotFoundError:
                continue
            yield from text.splitlines()


STATE_DIR_ENV = "OPENMOS_STATE_DIR"


def state_dir() -> Path:
    """Where the agent keeps what must survive a restart (accounts, ...): ``$OPENMOS_STATE_DIR``, else
    ``/var/lib/openmos`` for root, else ``$XDG_STATE_HOME/openmos`` (``~/.local/state/openmos``)."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/openmos")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "openmos"
