"""Base file helpers: durable appends of the fleet audit log (one record per write, nothing rewritten, torn last
lines skipped) and TOML files read with one clear error."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from openmos.base.files import RotatingLog, append_line
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
    ctl.audit = RotatingLog(log)
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


def test_a_flood_of_audit_records_rotates_within_bounds_keeping_every_record_whole(tmp_path: Path) -> None:
    """Each request may add ~16 kB to the audit log: a flood must not fill the disk. Past the limit the log
    rotates (audit.jsonl.1 .. .N), the total stays bounded, no record is split, and the reader gives the newest
    records in order across the files."""
    log = tmp_path / "audit.jsonl"
    ctl = FleetController.__new__(FleetController)  # only the audit log is exercised: no bus needed
    ctl.audit_path = log
    ctl.audit = RotatingLog(log, max_bytes=RotatingLog.MIN_BYTES, keep=2)
    big = "x" * 16_000
    n = 40  # ~640 kB written, ten times the limit
    for i in range(n):
        ctl._audit("ops", "request", {"n": i, "args": big})
    files = ctl.audit.files()
    assert files == [tmp_path / "audit.jsonl.2", tmp_path / "audit.jsonl.1", log]
    assert not (tmp_path / "audit.jsonl.3").exists()
    assert all(p.stat().st_size <= RotatingLog.MIN_BYTES for p in files)
    for p in files:  # every file holds whole records only
        assert p.read_bytes().endswith(b"\n")
        assert all(json.loads(line)["args"] == big for line in p.read_text().splitlines())
    kept = [e["n"] for e in ctl.audit_log()]
    assert len(kept) >= 6 and kept == list(range(n - len(kept), n))  # the newest, contiguous, oldest first


@pytest.mark.parametrize(("max_bytes", "keep"), [(0, 5), (-1, 5), (1 << 40, 5), (1 << 20, 0), (1 << 20, 10_000)])
def test_absurd_audit_rotation_settings_are_refused(tmp_path: Path, max_bytes: int, keep: int) -> None:
    with pytest.raises(ValueError, match="log"):
        RotatingLog(tmp_path / "audit.jsonl", max_bytes, keep)


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
