"""scripts/bench_limits.py runs end to end (a smoke run: the figures themselves are machine-bound)
and checks that the limited gateways really apply their limits."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_bench_limits_reports_ratios_for_local_and_redis():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_limits.py"), "--rounds", "1",
                           "--requests", "15"], capture_output=True, text=True, timeout=240)
    assert done.returncode in (0, 2), done.stderr  # 2: a target ratio missed on this machine
    rows = dict(re.findall(r"^(nolimits|local|redis)\s+[\d.]+\s+[\d.]+\s+([\d.]+)", done.stdout, re.M))
    assert set(rows) == {"nolimits", "local", "redis"} and float(rows["nolimits"]) == 1.0, done.stdout


def test_scripts_bench_runs_the_limits_case_on_request():
    sys.path[:0] = [str(ROOT / "scripts")]
    import bench

    assert bench.parse_args(["--limits"]).limits and not bench.parse_args([]).limits
