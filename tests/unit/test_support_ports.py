"""The test servers' ports: below the kernel's ephemeral range (where outgoing connections of other
tests take theirs), one slice per pytest worker, and not handed out twice by one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import REPO_ROOT

EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ports_of(worker: str, count: int, workers: int = 4) -> list[int]:
    code = ("from tests.support.procs import free_port; "
            f"print(' '.join(str(free_port()) for _ in range({count})))")
    env = {**os.environ, "PYTEST_XDIST_WORKER": worker, "PYTEST_XDIST_WORKER_COUNT": str(workers)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return [int(p) for p in out.split()]


@pytest.mark.skipif(not EPHEMERAL.exists(), reason="no Linux ephemeral port range to stay out of")
def test_ports_stay_below_the_ephemeral_range_in_a_slice_per_worker():
    low = int(EPHEMERAL.read_text().split()[0])
    first, last = ports_of("gw0", 50), ports_of("gw3", 50)
    assert len(set(first)) == 50 and len(set(last)) == 50
    assert all(port < low for port in first + last)
    assert max(first) < min(last)  # worker 0's slice lies wholly below worker 3's
