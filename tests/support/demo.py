"""The self-contained demo as a user starts it (`scripts/gateway [demo options]`), on free ports,
and what its banner tells the user to run."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

from .gateway import ROOT, Process
from .procs import free_port

GATEWAY = ROOT / "scripts" / "gateway"


class Demo:
    def __init__(self, workdir: Path, *extra: str, tool: str | None = None):
        self.port, self.proxy_port, self.upstream_port, self.web_port, self.llm_port = (free_port() for _ in range(5))
        self.workdir = workdir
        argv = [str(GATEWAY), *([tool] if tool else []), "--port", str(self.port), "--proxy-port", str(self.proxy_port),
                "--upstream-port", str(self.upstream_port), "--web-port", str(self.web_port),
                "--llm-port", str(self.llm_port), *extra]
        # HOME: mitmproxy's CA and confdir go there, not into the user's
        self.process = Process(argv, workdir / "demo.log", env={"HOME": str(workdir)})
        self.process.wait_for(r"Press Ctrl-C to stop", timeout=90)
        self.process.wait_for(r"policy version 1 loaded")
        self.banner = self.process.output().split("MCP gateway demo is running", 1)[1].split("Press Ctrl-C", 1)[0]

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/github-mcp"

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}/mcp"

    def commands(self) -> list[str]:
        """Every shell command the banner prints, as printed."""
        return re.findall(r"^  ((?:\.venv/bin/python|curl) .*)$", self.banner, re.M)

    def snippet(self, title: str) -> list[str]:
        """The code lines under a banner heading ("TypeScript", "Python"), without their indent."""
        lines = self.banner.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(title))
        out = []
        for line in lines[start + 1:]:
            if not line.startswith("  "):
                break
            out.append(line[2:])
        return out

    def run(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A banner command pasted into a shell in the project directory."""
        return subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HOME": str(self.workdir)})

    def policy_path(self) -> Path:
        shown = Path(re.search(r"^  policy:\s+(\S+)", self.banner, re.M).group(1))
        return shown if shown.is_absolute() else ROOT / shown

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.proc.pid, signal.SIGINT)  # Ctrl-C, as the banner says
        try:
            self.process.proc.wait(20)
        finally:
            self.process.stop()
