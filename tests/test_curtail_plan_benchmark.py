"""benchmarks/curtail_plan.py runs with one command and checks every plan it times (it exits non-zero on a plan
over its target, off the PLL grid or off the supply's steps)."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO


def test_the_device_side_curtail_benchmark_runs_and_every_plan_is_right() -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/curtail_plan.py"), "--devices", "2",
                           "--models", "s21"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.strip().startswith("s21"))
    assert "all under target, on grid and steps" in row
    warm, cold = (float(x) for x in row.split()[2:4])
    assert warm > 0 and cold > 0
