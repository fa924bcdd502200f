"""Attacks on the demo as `scripts/gateway` starts it (issue 12 item 1): it listened on every
interface, and its intercept listener was an open forward proxy, `curl -x` reaching any local
service (and, through CONNECT, any TCP port). Written as someone on the network or a local
process would try it; the demo user's own traffic through the same listener must keep working.

Extend this module with every new way of using the demo's listeners for something it does not
govern."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from tests.support.demo import Demo

pytestmark = pytest.mark.e2e

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
DEV = {"apikey": "dev-api-key", "Authorization": "Bearer demo-user-token",
       "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class LocalService:
    """An unrelated local TCP service (think Redis, or an admin port): it greets, echoes one line,
    and counts the connections that reach it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                try:
                    data = conn.recv(1024)
                    http = data.startswith(b"GET")
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 14\r\n\r\nlocal secret\r\n" if http
                                 else b"+secret " + data)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = Demo(tmp_path_factory.mktemp("attack-demo"))
    yield d
    d.stop()


@pytest.fixture
def service():
    s = LocalService()
    yield s
    s.close()


def lan_address() -> str | None:
    """This machine's address on its network, if it has one besides loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, the kernel only picks a source address
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def connect_tunnel(demo: Demo, authority: str) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", demo.proxy_port), timeout=10)
    s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head


def test_the_demo_listens_on_loopback_only(demo):
    address = lan_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback to try from")
    for port in (demo.port, demo.proxy_port, demo.upstream_port):
        with socket.socket() as s:
            s.settimeout(3)
            assert s.connect_ex((address, port)) != 0, f"port {port} answers on {address}"


def test_curl_x_to_a_local_service_is_refused(demo, service):
    with httpx.Client(proxy=f"http://127.0.0.1:{demo.proxy_port}", timeout=10) as c:
        answer = c.get(f"http://127.0.0.1:{service.port}/")
        own = c.get(f"http://127.0.0.1:{demo.port}/github-mcp")  # the gateway's own listener, round again
    assert answer.status_code == 403 and "not governed" in answer.json()["message"]
    assert own.status_code == 403
    assert service.connections == 0


@pytest.mark.parametrize("payload", [b"PING\r\n", b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_a_tunnel_to_a_local_service_is_refused(demo, service, payload):
    """Raw TCP, a TLS-looking start, plain HTTP: none may reach a port the policy does not govern."""
    s, head = connect_tunnel(demo, f"127.0.0.1:{service.port}")
    with s:
        assert head.startswith(b"HTTP/1.1 403"), head
        s.settimeout(2)  # the proxy may keep the refused connection open, reading what follows as a request
        try:
            s.sendall(payload)
            rest = s.recv(4096)
        except OSError:
            rest = b""
    assert b"secret" not in rest
    assert service.connections == 0


def test_governed_traffic_through_the_intercept_listener_still_works(demo):
    """The demo user's agent, configured with the proxy: absolute-form requests and (as undici's
    proxy agent sends even plain http) a CONNECT tunnel to the upstream, both governed."""
    with httpx.Client(proxy=f"http://127.0.0.1:{demo.proxy_port}", timeout=20) as c:
        answer = c.post(demo.upstream_url, json=INIT, headers=DEV)
    assert answer.status_code == 200 and answer.headers["x-mcp-gateway-route"] == "github-mcp"
    s, head = connect_tunnel(demo, f"127.0.0.1:{demo.upstream_port}")
    with s:
        assert head.startswith(b"HTTP/1.1 200"), head
        body = json.dumps(INIT).encode()
        fields = "".join(f"{k}: {v}\r\n" for k, v in DEV.items())
        s.sendall(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{demo.upstream_port}\r\n{fields}"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and b"X-MCP-Gateway-Route: github-mcp" in reply
    with httpx.Client(proxy=f"http://127.0.0.1:{demo.proxy_port}", timeout=20) as c:
        refused = c.post(demo.upstream_url, json=INIT, headers={**DEV, "apikey": "nope"})
    assert refused.status_code == 401  # governed: the gateway's key-auth answered
