"""benchmarks/tuner.py's bookkeeping: a matrix saved run by run (--json) reads back and reports, whole, in
parts or stopped midway."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType

import pytest

from helpers import load_script


def load_bench() -> ModuleType:
    return load_script("benchmarks/tuner.py", "openmos_tuner_benchmark")


def test_saved_runs_read_back_and_report_even_when_incomplete(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    results = []
    for i, (model, kind, fraction) in enumerate([("s21", "power", 0.7), ("s21", "hashrate", 0.9),
                                                  ("bitaxe-gamma", "power", 0.7)]):
        case = bench.Case(model, 40.0, kind, fraction, seed=i % 2, minutes=15.0)
        results.append(bench.Result(case, 0.001 * (i + 1), 0.04, 0.042, 0.15, 4.0 + i, 0.002, 0.001, 0.001,
                                    False, 0, 1.0))
    path = tmp_path / "runs.json"
    bench._write(path, results)
    back = bench._load(path)
    assert back == results
    mx = bench._matrix_of(back)
    assert mx.models == ("s21", "bitaxe-gamma") and mx.inlets == (40.0,) and mx.seeds == 2
    bench._report(back, mx, 15.0)
    out = capsys.readouterr().out
    assert "3 runs" in out and "incomplete: 3 of 8" in out
    assert "time to within 2 %         6.0 min" in out  # the worst of the three
    capped = [dataclasses.replace(results[0], capped=True), *results[1:]]
    bench._report(capped, mx, 15.0)
    assert "capped runs" in capsys.readouterr().out
