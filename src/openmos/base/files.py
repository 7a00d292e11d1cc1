"""Atomic writes (readers see the old file or the new one, never a torn one) and the state directory."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
