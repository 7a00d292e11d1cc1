"""The package metadata builds without deprecation warnings on the pinned build backend."""

from __future__ import annotations

import re
import tomllib

from helpers import REPO


def _pyproject() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def test_license_is_an_spdx_string_with_its_file() -> None:
    """A ``license = {text = ...}`` table made setuptools print a BuildBackendWarning (removed by 2027-02-18)
    twice on every ``make .venv/.installed``."""
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    assert project["license"] == "Apache-2.0"
    files = project["license-files"]
    assert files and all((REPO / name).is_file() for name in files)
    assert "Apache License" in (REPO / "LICENSE").read_text(encoding="utf-8")[:200]


def test_build_backend_is_pinned_to_versions_that_read_spdx_licenses() -> None:
    """SPDX ``license`` and ``license-files`` need setuptools >= 77: a fresh machine must not pick an older one."""
    build = _pyproject()["build-system"]
    assert isinstance(build, dict)
    (setuptools,) = [r for r in build["requires"] if r.startswith("setuptools")]
    low = re.search(r">=\s*(\d+)", setuptools)
    assert low is not None and int(low.group(1)) >= 77
    assert "<" in setuptools  # an upper bound: a future major cannot break the build unannounced
