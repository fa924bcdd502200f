"""Smoke test of the REST tools benchmark (scripts/bench_rest_tools.py): it starts a REST API, bare
mitmdump, the gateway and the gateway at a baseline revision, measures a few calls, and reports the
medians and the ratios; and scripts/bench accepts --rest-tools, which runs it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.procs import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_rest_tools_benchmark_reports_its_figures():
    run = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "bench_rest_tools.py"), "--rounds", "1",
                          "--samples", "3", "--baseline", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert re.search(r"^REST GET through mitmdump +\d+\.\d+$", run.stdout, re.M), run.stdout
    assert re.search(r"^REST GET through an open route +\d+\.\d+   ratio \d+\.\d+x$", run.stdout, re.M), run.stdout
    assert re.search(r"^tools/call through the gateway +\d+\.\d+   ratio \d+\.\d+x, \d+\.\d+x the open route",
                     run.stdout, re.M), run.stdout
    assert re.search(r"^tools/list \(answered, no API call\) +\d+\.\d+$", run.stdout, re.M), run.stdout
    assert re.search(r"^tools/call through the baseline +\d+\.\d+   gateway/baseline \d+\.\d+x \(HEAD\)$",
                     run.stdout, re.M), run.stdout


def test_bench_accepts_rest_tools():
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import bench

    assert bench.parse_args(["--quick", "--rest-tools"]).rest_tools is True
    assert bench.parse_args(["--quick"]).rest_tools is False
