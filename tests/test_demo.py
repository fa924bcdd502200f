"""`scripts/gateway` with no arguments: the self-contained demo starts, prints what to try, and
what it prints works (the demo client through the gateway: the ACL at work)."""

import os
import re
import signal
import subprocess
import sys

import pytest

from tests.support.gateway import ROOT, Process, free_port

pytestmark = pytest.mark.e2e


def test_the_demo_runs_and_its_suggested_commands_work(tmp_path):
    ports = [str(free_port()) for _ in range(3)]
    demo = Process([sys.executable, str(ROOT / "scripts" / "demo.py"), "--port", ports[0], "--proxy-port", ports[1],
                    "--upstream-port", ports[2]], tmp_path / "demo.log", env={"HOME": str(tmp_path)})
    try:
        demo.wait_for(r"Press Ctrl-C to stop", timeout=60)
        banner = demo.output()
        assert "dev-user" in banner and "dev-api-key" in banner and f"http://localhost:{ports[0]}/github-mcp" in banner
        commands = re.findall(r"^  (\.venv/bin/python scripts/demo_client\.py .*)$", banner, re.M)
        assert len(commands) == 2 and "dev-api-key" in commands[0]

        def run(command: str) -> subprocess.CompletedProcess:
            argv = [sys.executable, *command.split()[1:]]
            return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)

        dev = run(commands[0])
        assert dev.returncode == 2 and "6 tools visible" in dev.stdout
        assert "Tool 'push_files' is not available for consumer group 'developer'" in dev.stdout
        admin = run(commands[1])
        assert admin.returncode == 0 and "push_files: " in admin.stdout and "refused" not in admin.stdout
    finally:
        os.killpg(demo.proc.pid, signal.SIGINT)
        demo.proc.wait(20)
        demo.stop()
