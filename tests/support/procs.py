"""Run helper processes (demo upstream, mitmdump, ...) in tests, and always clean them up.

    with running([sys.executable, "server.py"], ready="listening on") as proc:
        ...                      # proc.output holds everything it printed so far

    with demo_upstream("--record") as upstream:
        upstream.mcp_url         # http://127.0.0.1:PORT/mcp

Each process gets its own process group, so terminating it also ends any children it started.
stdout and stderr are merged and drained by a thread (a full pipe would block the child); a
process that exits or stays silent before its ready line raises `ProcessStartError` with its output.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_UPSTREAM = REPO_ROOT / "scripts" / "demo_upstream.py"
DEMO_UPSTREAM_READY = re.compile(r"demo upstream listening on (https?://\S+)/mcp")

Pattern = str | re.Pattern[str]


class ProcessStartError(RuntimeError):
    pass


# Ports handed out are not held: the process that gets one binds it later. A port the kernel picks
# (bind to 0) lies in its ephemeral range, where any outgoing connection of a parallel test can take
# it in that window. So ports come from below that range, from a slice of its own for each pytest
# worker, walked from a random start per process (a test and the bench it starts share a slice).
_PORTS_FLOOR = 10000


def _port_slice() -> range | None:
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if ephemeral_low - _PORTS_FLOOR < 2000:
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), 1)
    index = int(worker) % count if worker.isdigit() else 0
    width = (ephemeral_low - _PORTS_FLOOR) // count
    return range(_PORTS_FLOOR + index * width, _PORTS_FLOOR + (index + 1) * width)


_ports: Iterator[int] | None = None


def _port_walk() -> Iterator[int]:
    ports = _port_slice()
    if ports is None:
        while True:
            yield 0
    start = random.randrange(len(ports))
    while True:
        for offset in range(len(ports)):
            yield ports[(start + offset) % len(ports)]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now and is not handed out again by this process soon after."""
    global _ports
    if _ports is None:
        _ports = _port_walk()
    for candidate in _ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise AssertionError("unreachable")


def _search(pattern: Pattern, line: str) -> re.Match[str] | None:
    regex = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
    return regex.search(line)


class ManagedProcess:
    """A started child process whose output is collected line by line."""

    def __init__(self, args: Sequence[str], popen: subprocess.Popen[str]) -> None:
        self.args = list(args)
        self.popen = popen
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._drain, name=f"output of pid {popen.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def _drain(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:  # end of output: wake waiters so they notice the exit
            self._changed.notify_all()

    def wait_for_line(self, pattern: Pattern, timeout: float = 20.0, *, start: int = 0) -> re.Match[str]:
        """The first output line from line number `start` on matching `pattern` (a substring or a regex).

        Raises ProcessStartError if the process ends or `timeout` passes first.
        """
        deadline = time.monotonic() + timeout
        checked = start
        with self._changed:
            while True:
                for line in self._lines[checked:]:
                    if match := _search(pattern, line):
                        return match
                checked = max(checked, len(self._lines))
                if not self._reader.is_alive():
                    reason = f"exited with status {self.popen.poll()}"
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    reason = f"printed nothing matching {pattern!r} within {timeout:.0f}s"
                    break
                self._changed.wait(remaining)
        raise ProcessStartError(f"{' '.join(self.args)} {reason}; its output:\n{self.output}")

    def terminate(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `timeout`; returns the exit status."""
        if self.popen.poll() is None:
            _signal_group(self.popen, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen, signal.SIGKILL)
                self.popen.wait(timeout)
        else:
            # The leader is gone, but children it left in the group may still run.
            _signal_group(self.popen, signal.SIGKILL)
        self._reader.join(timeout)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()


def _signal_group(popen: subprocess.Popen[str], sig: signal.Signals) -> None:
    try:
        os.killpg(popen.pid, sig)  # the child leads its own group (start_new_session)
    except ProcessLookupError:
        pass


def start_process(args: Sequence[str], *, ready: Pattern | None = None, timeout: float = 20.0,
                  env: dict[str, str] | None = None, cwd: str | Path | None = None) -> ManagedProcess:
    """Start `args` and, if `ready` is given, wait until a line of its output matches it.

    `env` is added to the current environment. On failure the process is terminated and
    ProcessStartError (with its output) is raised.
    """
    popen = subprocess.Popen(
        list(args), cwd=cwd or REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        start_new_session=True,
    )
    process = ManagedProcess(args, popen)
    if ready is not None:
        try:
            process.wait_for_line(ready, timeout)
        except BaseException:
            process.terminate()
            raise
    return process


def terminate(process: ManagedProcess, timeout: float = 5.0) -> int | None:
    return process.terminate(timeout)


@contextmanager
def running(args: Sequence[str], **options: object) -> Iterator[ManagedProcess]:
    """`start_process` as a context manager: the process is terminated however the block ends."""
    process = start_process(args, **options)  # type: ignore[arg-type]
    try:
        yield process
    finally:
        process.terminate()


@dataclass
class DemoUpstream:
    process: ManagedProcess
    base_url: str  # http://HOST:PORT

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def mcp_url(self) -> str:
        return self.base_url + "/mcp"

    @property
    def sse_url(self) -> str:
        return self.base_url + "/sse"


def start_demo_upstream(*args: str, port: int = 0, host: str = "127.0.0.1", timeout: float = 20.0) -> DemoUpstream:
    """Start scripts/demo_upstream.py with extra CLI `args`; port 0 lets it pick a free port itself."""
    command = [sys.executable, str(DEMO_UPSTREAM), "--host", host, "--port", str(port), *args]
    process = start_process(command, timeout=timeout)
    try:
        match = process.wait_for_line(DEMO_UPSTREAM_READY, timeout)
    except BaseException:
        process.terminate()
        raise
    return DemoUpstream(process, match.group(1))


@contextmanager
def demo_upstream(*args: str, **options: object) -> Iterator[DemoUpstream]:
    """`start_demo_upstream` as a context manager that always terminates the server."""
    upstream = start_demo_upstream(*args, **options)  # type: ignore[arg-type]
    try:
        yield upstream
    finally:
        upstream.process.terminate()
