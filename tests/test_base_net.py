"""openmos.base.net.raise_open_files: the one way a process that holds thousands of sockets (the cgminer farm,
the fleet benchmarks) raises its open-files limit. Run in a child process: the test must not change pytest's."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import resource
from openmos.base.net import raise_open_files
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
low = min(soft, 256)
resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
assert raise_open_files(low - 10) == low, "never lowered"
assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == low
wanted = low + 100 if hard == resource.RLIM_INFINITY else min(hard, low + 100)
assert raise_open_files(low + 100) == wanted == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
if hard != resource.RLIM_INFINITY:
    assert raise_open_files(hard + 1_000_000) == hard, "capped at the hard limit, no error"
print("ok")
"""


def test_raise_open_files_raises_never_lowers_and_stops_at_the_hard_limit() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
