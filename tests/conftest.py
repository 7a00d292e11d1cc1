"""Shared fixtures: everything runs on 127.0.0.1 and is stopped at the end of each test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Test modules import their helpers (helpers.py, fake_pool.py, ...) by plain name.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's state directory (accounts, ...) goes to a fresh temporary folder in every test, never to
    /var/lib/openmos or ~/.local/state of whoever runs the suite."""
    monkeypatch.setenv("OPENMOS_STATE_DIR", str(tmp_path_factory.mktemp("state")))
