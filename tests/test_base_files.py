"""Durable appends of the fleet audit log: one record per write, nothing rewritten, torn last lines skipped."""

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
