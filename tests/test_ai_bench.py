"""Smoke test of the LLM route benchmark (scripts/bench_llm.py, scripts/bench --llm): it starts the
demo provider, bare mitmdump and the gateway, measures a few calls, and reports the ratios and CPU per
call, for the LLM route and for a balanced route through the retry relay."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.procs import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_llm_benchmark_reports_its_ratios():
    run = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "bench_llm.py"), "--rounds", "1", "--samples", "3"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    for prefix in ("", "relay "):  # the LLM route, then the balanced route through the retry relay
        for label in ("time to first token", "stream total (100 words)", "JSON latency"):
            assert re.search(rf"^{prefix}{re.escape(label)} +\d+\.\d+ +\d+\.\d+ +\d+\.\d+x  (ok|over target)$",
                             run.stdout, re.M), run.stdout
        assert re.search(rf"^{prefix}CPU per call +\d+\.\d+ +\d+\.\d+ +\d+\.\d+x", run.stdout, re.M), run.stdout
    # the held floor (bodies held, lazy upstream connections) against the same mitmdump, and the gateway over it
    for label in ("time to first token", "stream total (100 words)", "JSON latency", "CPU per call"):
        assert re.search(rf"^held {re.escape(label)} +\d+\.\d+ +\d+\.\d+ +\d+\.\d+x +\d+\.\d+x$", run.stdout, re.M), run.stdout
