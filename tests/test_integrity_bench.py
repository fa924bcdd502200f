"""scripts/bench_integrity.py runs and reports its ratios (in process and end to end)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_integrity_benchmark_reports_ratios():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_integrity.py"), "--quick"],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    for case, target in (("list (JSON)", "1.5"), ("result (JSON)", "1.2"), ("result (SSE)", "1.2")):
        assert re.search(rf"^e2e {re.escape(case)} +without +\d+\.\d+ ms +with +\d+\.\d+ ms +ratio \d+\.\d+ "
                         rf"\(target <= {target}\)$", run.stdout, re.M), run.stdout
    # the floor for held answers: the route without integrity, its answer held whole
    assert re.search(r"^e2e +held, no integrity +without +\d+\.\d+ ms +held +\d+\.\d+ ms +ratio \d+\.\d+ "
                     r"\(holding alone; with integrity over held: \d+\.\d+\)$", run.stdout, re.M), run.stdout
    assert re.search(r"^in-process list .*JSON +\d+\.\d+ ms, SSE +\d+\.\d+ ms; parsed and judged \(the full path\) "
                     r"+\d+\.\d+ ms$", run.stdout, re.M), run.stdout


def test_integrity_benchmark_with_pins_in_redis():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_integrity.py"), "--quick", "--redis"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^e2e list \(JSON\) Redis pins +without +\d+\.\d+ ms +with +\d+\.\d+ ms +ratio \d+\.\d+ ",
                     run.stdout, re.M), run.stdout


def test_the_hold_addon_holds_only_the_answers_it_is_asked_to():
    from mitmproxy.test import tflow

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_hold_answers_addon import HoldAnswers

    asked, other = tflow.tflow(resp=True), tflow.tflow(resp=True)
    asked.request.headers["X-Bench-Hold"] = "1"
    for flow in (asked, other):
        flow.response.stream = True  # as the gateway leaves an answer it streams
        HoldAnswers().responseheaders(flow)
    assert asked.response.stream is False and other.response.stream is True
