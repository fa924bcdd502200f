"""Smoke test of the benchmark (scripts/bench.py): it starts every process, measures a handful of
calls through each target, prints the report and stops everything. No timing is asserted: the
figures of so short a run mean nothing."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.procs import REPO_ROOT

pytestmark = pytest.mark.e2e

SMALLEST_RUN = ["--quick", "--rounds", "1", "--requests", "10", "--concurrency", "4", "--throughput-requests", "20"]
RATIOS = ["tools/call, JSON answer: median", "tools/call, JSON answer: p99", "tools/call, SSE answer: median",
          "tools/call, SSE answer: p99", "time to first SSE event: median", "throughput, JSON answers",
          "throughput, SSE answers"]


def test_quick_benchmark_runs_and_reports_ratios():
    # With a baseline: the gateway at HEAD runs beside this tree's, and gateway/baseline is reported.
    run = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), *SMALLEST_RUN, "--baseline", "HEAD"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "baseline: the gateway at revision HEAD" in run.stdout and "gateway/baseline" in run.stdout
    for label in RATIOS:
        assert re.search(rf"^ratio {re.escape(label)} +(\d+\.\d+x +){{5}}", run.stdout, re.M), run.stdout
    assert re.search(r"^ratio tools/call, JSON answer: median .*<= 1\.10x  (PASS|MISS)$", run.stdout, re.M)
    assert re.search(r"^ratio throughput, JSON answers .*>= 0\.90x  (PASS|MISS)$", run.stdout, re.M)
    # The filtering benchmark lives in scripts/bench_filter.py; its ratios, or why there are none.
    assert re.search(r"^(ratio tools/list filtering.*x .*(PASS|MISS)|tools/list filtering: )", run.stdout, re.M)
    assert "round 1/1" in run.stderr
    # Each process's CPU time per call, and the CPU ratios of the targets that ran.
    assert re.search(r"^process CPU per call \(ms\).*mitmdump +buffered +gateway .*baseline$", run.stdout, re.M)
    assert re.search(r"^ratio CPU gateway/baseline +\d+\.\d+x +\(rounds \d+\.\d+x to \d+\.\d+x\)$", run.stdout, re.M)


def test_telemetry_run_reports_tracing_beside_an_identical_control():
    # --telemetry: a traced gateway, and a second untraced one whose ratio to the first is the run's resolution.
    run = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), *SMALLEST_RUN, "--telemetry",
                          "--no-filter"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert re.search(r"^process CPU per call \(ms\).* traced +control$", run.stdout, re.M), run.stdout
    assert re.search(r"^ratio CPU traced/gateway +\d+\.\d+x +\(rounds .*\)   <= 1\.05x  (PASS|MISS)$", run.stdout, re.M)
    assert re.search(r"^ratio CPU control/gateway +\d+\.\d+x +\(rounds \d+\.\d+x to \d+\.\d+x\)$", run.stdout, re.M)
    for label in RATIOS:  # traced/gateway and control/gateway columns after the four fixed ones
        assert re.search(rf"^ratio {re.escape(label)} +(\d+\.\d+x +){{6}}", run.stdout, re.M), run.stdout


def test_help_describes_the_options():
    run = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "--help"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    for option in ("--requests", "--concurrency", "--rounds", "--quick", "--throughput-requests", "--baseline"):
        assert option in run.stdout
