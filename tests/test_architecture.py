"""The layering the package docstrings promise: lower layers never import higher ones."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "openmos"

# Which openmos sub-packages each layer may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "control": set(),
    "bitcoin": set(),
    "stratum": {"base", "bitcoin"},
    "hw": {"base", "bitcoin", "control"},
    "emulator": {"base"},  # wire-level hardware emulator: shares no code with the hw drivers
    "security": {"base"},
    "tuning": {"base", "hw", "control"},
    "node": {"base", "bitcoin"},
    "pool": {"base", "bitcoin", "stratum", "node"},
    "jd": {"base", "bitcoin", "stratum", "node", "pool", "api"},  # api: the dashboard's HTTP server
    "proxy": {"base", "bitcoin", "stratum", "pool", "api"},
    "energy": {"base", "control"},
    "maintenance": {"base", "control", "hw"},  # predictive maintenance: telemetry in, flags out
    "miner": {"base", "control", "bitcoin", "stratum", "hw", "tuning", "security", "maintenance"},
    "api": {"base", "control", "bitcoin", "stratum", "hw", "tuning", "security", "miner", "maintenance"},
    "integrations": set(),
    "mqtt": {"base", "control", "miner", "api", "tuning"},
    "fleet": {"base", "control", "hw", "security", "miner", "api", "tuning", "energy"},
    "testbed": {"base", "control", "bitcoin", "stratum", "hw", "tuning", "security", "miner", "api", "fleet",
                "energy"},
    "cli": {"base", "control", "testbed", "bitcoin", "stratum", "node", "jd", "hw", "security", "tuning", "pool",
            "proxy", "energy", "miner", "api", "integrations", "fleet", "emulator", "mqtt", "maintenance"},
}


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "openmos" and len(parts) > 1:
                layers.add(parts[1])
    return layers


def test_every_layer_imports_only_what_it_may() -> None:
    problems = []
    for layer, allowed in ALLOWED.items():
        for path in (SRC / layer).rglob("*.py"):
            bad = imported_layers(path) - allowed - {layer}
            if bad:
                problems.append(f"{path.relative_to(SRC)} imports {sorted(bad)}")
    assert not problems, problems


def test_every_layer_is_listed_and_documented() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)
    for name in packages:
        doc = ast.get_docstring(ast.parse((SRC / name / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"openmos.{name} needs a docstring saying what it owns"


def _doc(init: Path) -> str:
    return ast.get_docstring(ast.parse(init.read_text())) or ""


def test_every_layer_docstring_names_what_it_may_import() -> None:
    """Each package's docstring says what it may import: every layer ALLOWED gives it, as ``name`` or
    ``openmos.name`` (a layer that may import all the others may say "every other layer")."""
    problems = []
    for layer, allowed in ALLOWED.items():
        doc = _doc(SRC / layer / "__init__.py")
        if allowed == set(ALLOWED) - {layer} and "every other layer" in doc:
            continue
        unnamed = [name for name in sorted(allowed) if not re.search(rf"``(openmos\.)?{name}(\.\w+)*``", doc)]
        if unnamed:
            problems.append(f"openmos.{layer}'s docstring does not name {unnamed} (ALLOWED lets it import them)")
    assert not problems, problems


def test_the_package_docstring_lists_every_layer_after_what_it_imports() -> None:
    """``src/openmos/__init__.py`` lists the layers lowest first: each after every layer it may import."""
    listed = re.findall(r"^- ``(\w+)``", _doc(SRC / "__init__.py"), re.M)
    assert sorted(listed) == sorted(ALLOWED), f"listed {sorted(listed)}, packages {sorted(ALLOWED)}"
    for layer, allowed in ALLOWED.items():
        later = [name for name in allowed if listed.index(name) > listed.index(layer)]
        assert not later, f"{layer} is listed before {later}, which it may import"
