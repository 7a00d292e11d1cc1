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


def test_saved_runs_keep_their_trace_and_score_again(tmp_path: Path) -> None:
    """A run saved with its trace is scored again from it (``--rescore``): a unit held at the oracle's own best
    point scores 0 % above the oracle, and the score survives the JSON round trip."""
    bench = load_bench()
    from openmos.hw.sim.oracle import Oracle

    case = bench.Case("bitaxe-gamma", 25.0, "power", 0.7, seed=1, minutes=15.0)
    fleet = bench.SimHardware(case.model, seed=case.seed, clock=bench.SimClock(speed=0),
                              t_inlet=case.inlet).oracle_view()
    best = Oracle(fleet, duty=0.5).best_at_power(15.0)
    trace = [(10.0 * i, best.wall_power_w, best.hashrate_ths, 0.5) for i in range(91)]
    seen = [(best.wall_power_w * 1.003, best.hashrate_ths)] * len(trace)
    run = bench.Run(best.wall_power_w, trace, seen, False, 0, 1.0)
    result = bench.score(case, run)
    assert abs(result.vs_oracle) < 1e-4 and result.minutes_to_2pct <= 1.0  # (a mean rounds a last bit)
    assert abs(result.target_error) < 1e-12 and abs(result.seen_error - 0.003) < 1e-9
    assert result.oracle_vs_uniform >= 0
    path = tmp_path / "runs.json"
    bench._write(path, [result])
    back = bench._load(path)
    assert back == [result]
    assert bench._rescore_one(back[0]) == result
