"""Shared fixtures: everything runs on 127.0.0.1 and is stopped at the end of each test."""

from __future__ import annotations

import sys
from pathlib import Path

# Test modules import their helpers (helpers.py, fake_pool.py, ...) by plain name.
sys.path.insert(0, str(Path(__file__).parent))
