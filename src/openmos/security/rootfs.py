"""Read-only access to a scanned filesystem root that never follows a symbolic link.

The tree being scanned is hostile: a planted ``authorized_keys -> /etc/passwd`` or a ``cron.d`` directory
symlinked to ``/etc`` must not make the scanner read (or print) files outside the root, and a FIFO or a
device node at a persistence point must not hang it. Every open walks the path one component at a time
with ``O_NOFOLLOW`` from a descriptor of the root, so a link anywhere on the way is refused, and only
regular files are read, at most ``MAX_READ`` bytes of them. Listings skip symlinked directories and stop
after ``MAX_ENTRIES`` entries per walk (a directory of a million files cannot stall a scan).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

MAX_READ = 1 << 20
MAX_ENTRIES = 50_000
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
_OPEN_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY


def printable(text: str, limit: int = 120) -> str:
    """Untrusted names (link targets, file names) made safe to show: no control characters, bounded."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class RootFS:
    """One scanned root. Paths are POSIX-style and relative to the root (``etc/crontab``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _parts(self, rel: str) -> list[str]:
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise ValueError(f"not a path inside the root: {rel!r}")
        return parts

    @contextlib.contextmanager
    def _parent(self, rel: str) -> Iterator[tuple[int, str]]:
        """A descriptor of ``rel``'s directory reached without following links, and the leaf name."""
        parts = self._parts(rel)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts[:-1]:
                nxt = os.open(part, _OPEN_DIR, dir_fd=fd)
                os.close(fd)
                fd = nxt
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def lstat(self, rel: str) -> os.stat_result | None:
        """The entry itself (a link is not followed), or None if it (or a real directory to it) is absent."""
        try:
            with self._parent(rel) as (fd, leaf):
                return os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        except (OSError, ValueError):
            return None

    def readlink(self, rel: str) -> str | None:
        try:
            with self._parent(rel) as (fd, leaf):
                return os.readlink(leaf, dir_fd=fd)
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def _regular(self, rel: str) -> Iterator[BinaryIO | None]:
        """``rel`` opened for reading if it is a regular file reached without following links, else None."""
        try:
            with self._parent(rel) as (dfd, leaf):
                fd = os.open(leaf, _OPEN_FILE, dir_fd=dfd)
        except (OSError, ValueError):
            yield None
            return
        with os.fdopen(fd, "rb") as fh:
            yield fh if stat.S_ISREG(os.fstat(fd).st_mode) else None

    def read(self, rel: str, limit: int = MAX_READ) -> bytes | None:
        """The first ``limit`` bytes of a regular file; None for links, FIFOs, devices, directories."""
        with self._regular(rel) as fh:
            return None if fh is None else fh.read(limit)

    def text(self, rel: str) -> str | None:
        data = self.read(rel)
        return None if data is None else data.decode(errors="replace")

    def sha256(self, rel: str) -> str | None:
        """Hex SHA-256 of a regular file (read in chunks, whole file), None for anything else."""
        h = hashlib.sha256()
        with self._regular(rel) as fh:
            if fh is None:
                return None
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    def digest(self, rel: str) -> str | None:
        """What a baseline records: the content hash of a file, or ``symlink:<target>`` for a link."""
        st = self.lstat(rel)
        if st is None:
            return None
        if stat.S_ISLNK(st.st_mode):
            return "symlink:" + (self.readlink(rel) or "")
        if stat.S_ISREG(st.st_mode):
            return self.sha256(rel)
        return None

    def listdir(self, rel: str) -> list[str]:
        """Names in a real (not symlinked) directory, sorted; empty when it is absent or not a directory."""
        try:
            if rel in ("", "."):
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            else:
                with self._parent(rel) as (dfd, leaf):
                    fd = os.open(leaf, _OPEN_DIR, dir_fd=dfd)
        except (OSError, ValueError):
            return []
        try:
            names = []
            with os.scandir(fd) as it:
                for entry in it:
                    names.append(entry.name)
                    if len(names) >= MAX_ENTRIES:
                        break
            return sorted(names)
        finally:
            os.close(fd)

    def is_dir(self, rel: str) -> bool:
        st = self.lstat(rel)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def glob(self, pattern: str) -> Iterator[str]:
        """Entries matching a ``*``/``?`` pattern, one directory level per component, links not entered."""
        parts = self._parts(pattern)

        def expand(prefix: str, i: int) -> Iterator[str]:
            part = parts[i]
            last = i == len(parts) - 1
            if any(c in part for c in "*?["):
                names = [n for n in self.listdir(prefix) if fnmatch.fnmatchcase(n, part)]
            else:
                names = [part]
            for name in names:
                rel = f"{prefix}/{name}" if prefix else name
                if last:
                    if self.lstat(rel) is not None:
                        yield rel
                elif self.is_dir(rel):
                    yield from expand(rel, i + 1)

        yield from expand("", 0)

    def walk(self, rel_dir: str, limit: int = MAX_ENTRIES) -> Iterator[tuple[str, os.stat_result]]:
        """Every non-directory entry below ``rel_dir`` (links included, as links), depth first, bounded."""
        stack = [rel_dir] if self.is_dir(rel_dir) else []
        seen = 0
        while stack:
            current = stack.pop()
            for name in self.listdir(current):
                rel = f"{current}/{name}"
                st = self.lstat(rel)
                seen += 1
                if st is None:
                    continue
                if seen > limit:
                    return
                if stat.S_ISDIR(st.st_mode):
                    stack.append(rel)
                else:
                    yield rel, st
