"""Serve an ASGI app with uvicorn on a background thread, for tests.

The listening socket is bound before uvicorn starts, so the port (picked by the OS) is known up
front and nothing races for it; `start()` returns once the server accepts connections.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


class ThreadedServer:
    def __init__(self, app, *, host: str = "127.0.0.1", startup_timeout: float = 10.0, **uvicorn_options) -> None:
        self.app = app
        self.uvicorn_options = uvicorn_options  # e.g. ssl_certfile / ssl_keyfile for an HTTPS server
        self.host = host
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("server is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("server already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without, uvicorn's separate header and body writes on a
        # kept-alive connection wait out the client's delayed ACK (about 40 ms per request).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False, **self.uvicorn_options)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"uvicorn:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"uvicorn exited during startup on port {self.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"uvicorn did not start within {self.startup_timeout}s")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        # Shutting down waits for every open connection to close (asyncio's Server.wait_closed), and
        # a test's client may still hold a kept-alive one: after a moment, drop them.
        self._thread.join(timeout=0.25)
        if self._thread.is_alive():
            self._server.force_exit = True
            for server in getattr(self._server, "servers", ()):
                for connection in list(self._server.server_state.connections):
                    server.get_loop().call_soon_threadsafe(connection.transport.abort)
                break
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None
