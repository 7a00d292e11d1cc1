"""Base file helpers: durable appends of the fleet audit log (one record per write, nothing rewritten, torn last
lines skipped) and TOML files read with one clear error."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from openmos.base.files import append_line
from openmos.fleet.control import FleetController


def test_append_line_adds_records_without_rewriting_the_file(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "audit.jsonl"
    append_line(log, b'{"n": 1}')
    inode = log.stat().st_ino
    append_line(log, b'{"n": 2}\n')
    assert log.read_bytes() == b'{"n": 1}\n{"n": 2}\n'
    assert log.stat().st_ino == inode  # appended in place, not replaced by a rewritten copy
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_controller_audit_appends_and_skips_a_torn_last_line(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "audit.jsonl"
    ctl = FleetController.__new__(FleetController)  # only the audit log is exercised: no bus needed
    ctl.audit_path = log
    # The audit log must never read the whole file back to add a line (quadratic in commands).
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("audit read the log back"))
    for i in range(3):
        ctl._audit("ops", "curtail", {"n": i})
    with log.open("ab") as fh:
        fh.write(b'{"time": 1, "who": "ops", "wh')  # a crash mid-append
    ctl._audit("ops", "curtail", {"n": 3})  # the next record after the crash is whole
    entries = ctl.audit_log()
    assert [e["n"] for e in entries] == [0, 1, 2, 3]
    assert all(json.loads(line) for line in log.read_text().splitlines()[:3])


def test_hostile_toml_files_are_one_clear_error(tmp_path: Path) -> None:
    """Config files an operator is handed: nesting deep enough to exhaust tomllib's recursion (a RecursionError
    traceback from mos config check, mos run and mos energy run), bytes that are not UTF-8, a huge file."""
    from openmos.base.files import MAX_TOML_BYTES, read_toml
    from openmos.energy.config import SiteConfig
    from openmos.hw.board.serial_chain import BoardDescription
    from openmos.miner.config import AgentConfig, ConfigError

    cases = {"deep.toml": ("a = " + "[" * 100_000 + "]" * 100_000).encode(), "latin1.toml": b"name = '\xe9'\n",
             "huge.toml": b"# " + b"x" * MAX_TOML_BYTES + b"\n"}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for load in (read_toml, SiteConfig.load, BoardDescription.load):
            with pytest.raises(ValueError) as err:
                load(path)
            assert str(path) in str(err.value) and len(str(err.value)) < 300
        with pytest.raises(ConfigError):
            AgentConfig.load(path)
    with pytest.raises(FileNotFoundError):
        read_toml(tmp_path / "missing.toml")
