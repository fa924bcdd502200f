"""Smoke tests of the profiling tools of issue 19 (scripts/bench_hooks.py, scripts/bench_profile.py,
scripts/bench_floor.py):
they run against the real gateway and report every case, hook event and phase. No figure is
asserted beyond being there: runs this short mean nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import REPO_ROOT

pytestmark = pytest.mark.e2e

SCRIPTS = REPO_ROOT / "scripts"


def test_hook_and_phase_timing_in_process():
    run = subprocess.run([sys.executable, str(SCRIPTS / "bench_hooks.py"), "--flows", "30", "--rounds", "1"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^hook event +buffered +open +gateway +seed$", run.stdout, re.M), run.stdout
    for event in ("requestheaders", "request", "responseheaders", "response", "all four", "over buffered"):
        assert re.search(rf"^{event} +(-?\d+\.\d +){{3}}-?\d+\.\d$", run.stdout, re.M), run.stdout
    # the seed recipe's own phases ran: its datakit challenge and key-auth, timed per phase
    assert re.search(r"^identity\.prm\.challenge +\d+\.\d +\d+\.\d +\d+\.\d", run.stdout, re.M), run.stdout
    assert re.search(r"^identity\.keyauth\.authenticate +", run.stdout, re.M)


@pytest.mark.skipif(shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None,
                    reason="py-spy (test extra) not installed")
def test_sampling_a_running_gateway_splits_hooks_and_phases():
    run = subprocess.run([sys.executable, str(SCRIPTS / "bench_profile.py"), "--case", "seed", "--seconds", "3"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    if run.returncode != 0 and "Permission denied" in run.stderr:
        pytest.skip("no ptrace rights on the gateway process here")
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^seed: \d+\.\d+ ms CPU per call, unprofiled", run.stdout, re.M), run.stdout
    match = re.search(r"^seed: (\d+) tools/call in .* (\d+) samples", run.stdout, re.M)
    assert match and int(match[1]) > 0 and int(match[2]) > 0, run.stdout
    assert re.search(r"^ +addon\.request(headers)? +\d+\.\d+ ms", run.stdout, re.M), run.stdout
    assert "mitmproxy addonmanager (all hooks, inclusive)" in run.stdout


def test_floor_benchmark_reports_every_target_against_held():
    run = subprocess.run([sys.executable, str(SCRIPTS / "bench_floor.py"), "--rounds", "1", "--calls", "10", "--frame",
                          "--dispatch"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    ratio = r"\d+\.\d{3}x \(\d+\.\d{3}-\d+\.\d{3}\)"
    for target in ("held", r"held\+d", "skeleton", "open", "frame", "seed"):
        assert re.search(rf"^{target} +\d+\.\d+ +\d+\.\d+ +{ratio} +{ratio} +{ratio}$", run.stdout, re.M), run.stdout
    # held against itself is 1.000x in every round
    assert re.search(r"^held .* 1\.000x \(1\.000-1\.000\) +1\.000x \(1\.000-1\.000\)", run.stdout, re.M), run.stdout
    assert "[round 1/1]" in run.stderr


def test_floor_benchmark_refuses_an_empty_run():
    run = subprocess.run([sys.executable, str(SCRIPTS / "bench_floor.py"), "--rounds", "0"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--rounds and --calls must be at least 1" in run.stderr, run.stderr
