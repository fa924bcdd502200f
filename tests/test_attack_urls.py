"""Attacks on how a URL is spelt (issue 11 items 1, 7, 8): a real mitmdump running the gateway,
the demo upstream, and requests written byte for byte as an attacker would write them (raw
sockets: HTTP clients normalise URLs on their own). Each attack was forwarded ungoverned before the
gateway canonicalized targets and placed intercept requests by destination; the legitimate
client's requests beside them must keep working.

Extend this module with every new way of naming a governed upstream or path."""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httpx
import h11
import pytest

from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, http_client, jsonrpc, mcp_session
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "attacker", "version": "1"}}
PUSH = {"name": "push_files", "arguments": {"owner": "o", "repo": "r", "branch": "main", "message": "m",
                                            "files": [{"path": "a", "content": "b"}]}}
DELETE = {"name": "delete_repository", "arguments": {"owner": "o", "repo": "r"}}
ADMIN, DEV = {"apikey": "admin-api-key"}, {"apikey": "dev-api-key"}
WELL_KNOWN = "/.well-known/oauth-protected-resource"
KEY_AUTH = {"hide_credentials": True}
ACL = {"consumer_identifier": "username", "include_consumer_groups": True, "default_acl": [{"scope": "tools", "deny": ["developer"]}],
       "tools": [{"name": "search_repositories", "acl": {"allow": ["admin", "developer"]}},
                 {"name": "push_files", "acl": {"allow": ["admin"]}}]}


# -- an attacker's HTTP/1.1, byte for byte ---------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        text = self.body.decode()
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
        return json.loads(text)


def _read_answer(sock: socket.socket) -> Answer | None:
    """One response read with h11; None when the connection closes before one arrives."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))  # h11 must think it asked
    conn.send(h11.EndOfMessage())
    status, headers, body = None, {}, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            conn.receive_data(data)
            if not data and status is None:
                return None
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return Answer(status, headers, body)


def _request(method: str, target: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()),
             f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body


def send(port: int, target: str, *, method: str = "POST", host: str | None = None, headers: dict | None = None,
         message: dict | None = None) -> Answer | None:
    """One request on a new connection to 127.0.0.1:port. An absolute-form `target` (http://...)
    asks a proxy listener to go there; an origin-form one talks to the listener itself."""
    body = json.dumps(message).encode() if message is not None else b""
    host = host or (re.match(r"https?://([^/]+)", target).group(1) if "://" in target else f"127.0.0.1:{port}")
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(_request(method, target, host, {**MCP_HEADERS, **(headers or {})} if message else
                              dict(headers or {}), body))
        return _read_answer(sock)


def tunnel(proxy_port: int, authority: str) -> socket.socket:
    """A CONNECT tunnel through the proxy listener, as HTTPS_PROXY clients open one."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=15)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    return sock


def mcp_call(do, tool: dict, headers: dict | None = None) -> tuple[int | None, int | None]:
    """initialize, then tools/call with the session the upstream gave (if any): both statuses."""
    init = do(jsonrpc("initialize", INIT), headers or {})
    session = {"Mcp-Session-Id": init.headers["mcp-session-id"]} if init and "mcp-session-id" in init.headers else {}
    call = do(jsonrpc("tools/call", tool, id=2), {**(headers or {}), **session, "MCP-Protocol-Version": "2025-06-18"})
    return (init.status if init else None), (call.status if call else None)


# -- a normalising upstream, as nginx and most front ends are ---------------------------------------


def rfc_remove_dot_segments(path: str) -> str:
    out: list[str] = []
    for seg in path.split("/")[1:]:
        if seg == "..":
            out = out[:-1]
        elif seg not in (".", ""):
            out.append(seg)
    return "/" + "/".join(out) + ("/" if path.endswith(("/", "/.", "/..")) and out else "")


def asgi(method):
    async def app(scope, receive, send):  # a plain coroutine function: uvicorn takes a bound method for ASGI 2
        await method(scope, receive, send)
    return app


class Normaliser:
    """Decodes the path, merges slashes, resolves dot segments, then forwards to the demo upstream:
    what it serves is what the path means, whatever its spelling. Records the raw paths it got."""

    def __init__(self, target: str):
        self.target, self.raw_paths = target, []
        self.server = ThreadedServer(asgi(self.app))
        self.server.start()
        self.base = self.server.base_url

    async def app(self, scope, receive, send):
        if scope["type"] != "http":
            return
        self.raw_paths.append(scope["raw_path"].decode("latin-1"))
        path = rfc_remove_dot_segments(re.sub("/+", "/", unquote_to_bytes(scope["raw_path"]).decode("latin-1")))
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"host", b"content-length", b"connection")]
        query = scope["query_string"].decode("latin-1")
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.request(scope["method"], self.target + path + (f"?{query}" if query else ""),
                                     headers=headers, content=body)
        kept = [(k, v) for k, v in r.headers.raw
                if k.lower() not in (b"content-length", b"transfer-encoding", b"connection", b"content-encoding")]
        await send({"type": "http.response.start", "status": r.status_code,
                    "headers": kept + [(b"content-length", str(len(r.content)).encode())]})
        await send({"type": "http.response.body", "body": r.content})


class Bystander:
    """A server no route governs: it records the raw target of what reaches it."""

    def __init__(self):
        self.raw_paths = []
        self.server = ThreadedServer(asgi(self.app))
        self.server.start()
        self.port = self.server.port

    async def app(self, scope, receive, send):
        if scope["type"] == "http":
            self.raw_paths.append(scope["raw_path"].decode("latin-1"))
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]})
            await send({"type": "http.response.body", "body": b"bystander"})


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream(workdir):
    up = DemoUpstream(workdir, "--json-response", name="upstream")
    yield up
    up.stop()


@pytest.fixture(scope="module")
def vendor(workdir):
    up = DemoUpstream(workdir, "--json-response", tls=True, name="vendor")  # https://localhost:PORT/mcp
    yield up
    up.stop()


@pytest.fixture(scope="module")
def front(upstream):
    normaliser = Normaliser(upstream.base)
    yield normaliser
    normaliser.server.stop()


@pytest.fixture(scope="module")
def bystander():
    b = Bystander()
    yield b
    b.server.stop()


@pytest.fixture(scope="module")
def gateway(workdir, upstream, vendor, front):
    governed = {"key_auth": KEY_AUTH, "acl": ACL}
    policy = {
        "gateway": {"debug_headers": True},  # intercept_unmatched: pass, the default
        "consumer_groups": ["admin", "developer"],
        "consumers": {"admin-user": {"groups": ["admin"], "keys": ["admin-api-key"]},
                      "dev-user": {"groups": ["developer"], "keys": ["dev-api-key"]}},
        "services": {
            "github": {"url": upstream.url},  # http://127.0.0.1:P/mcp, nothing else of that server
            "vendor": {"url": vendor.url},  # https://localhost:T/mcp
            "front": {"url": front.base},  # a service at the root of its host (like demo.yaml's legacy one)
            "front-public": {"url": front.base + "/public"},
            "front-private": {"url": front.base + "/mcp"},
        },
        "routes": {
            "github-mcp": {"service": "github", "paths": ["/github-mcp"], **governed},
            "vendor-mcp": {"service": "vendor", "paths": ["/vendor-mcp"], **governed},
            "front": {"service": "front", "paths": ["/front"], **governed},
            "public": {"service": "front-public", "paths": ["/public"]},  # no authentication
            "private": {"service": "front-private", "paths": ["/mcp"], **governed},
        },
    }
    # ignore_hosts as an operator sets it for some certificate-pinning app: the patterns are also
    # matched against the Host header and SNI, which the client chooses.
    gw = Gateway(workdir, policy, extra=["--set", r"ignore_hosts=^pinned\.example"])
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def fresh_upstream(upstream, vendor, front, bystander):
    upstream.reset()
    vendor.reset()
    front.raw_paths.clear()
    bystander.raw_paths.clear()


def through_proxy(gateway, url: str, **kw):
    """An MCP POST to `url` (written as is) through the intercept listener."""
    return lambda message, headers: send(gateway.proxy_port, url, message=message, headers={**headers, **kw})


# == item 1: intercept mode, another name for a governed server ===================================


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST", "127.0.0.1.", "127.1", "2130706433", "0x7f.1",
                                  "0.0.0.0", "[::ffff:127.0.0.1]"])
def test_another_name_of_the_service_is_the_service(gateway, upstream, name):
    url = f"http://{name}:{upstream.port}/mcp"
    init, call = mcp_call(through_proxy(gateway, url), PUSH)
    assert (init, call) == (401, 401)
    assert upstream.requests() == []


def test_an_encoded_path_is_the_path(gateway, upstream):
    for path in ("/%6Dcp", "/%6dcp", "/%6D%63%70", "/x/%2e%2e/mcp", "/x/../mcp", "//mcp", "/mcp/."):
        init, call = mcp_call(through_proxy(gateway, f"http://127.0.0.1:{upstream.port}{path}"), PUSH)
        assert (path, init, call) == (path, 401, 401)
    assert upstream.tool_calls() == [] and upstream.requests() == []


@pytest.mark.parametrize("path", ["/mcp%2F", "/x/..%2fmcp", "/x/..%5Cmcp", "/x/..\\mcp", "/mcp%00", "/%252e%252e/mcp",
                                  "/..;/mcp"])
def test_ambiguous_spellings_on_a_governed_origin_are_refused(gateway, upstream, path):
    answer = send(gateway.proxy_port, f"http://127.0.0.1:{upstream.port}{path}", message=jsonrpc("tools/call", PUSH),
                  headers=ADMIN)
    assert answer.status == 400 and answer.json()["error"] == "bad_request_target"
    assert upstream.requests() == []


def test_a_governed_origin_answers_only_its_routes(gateway, vendor):
    """The vendor's service is https://localhost:T/mcp; the rest of that server is not a way around it."""
    with tunnel(gateway.proxy_port, f"127.0.0.1:{vendor.port}") as sock:
        import ssl

        tls = ssl.create_default_context(cafile=str(gateway.ca_cert))
        tls.check_hostname = False
        with tls.wrap_socket(sock, server_hostname="localhost") as s:
            s.sendall(_request("GET", "/_test/echo", f"localhost:{vendor.port}", {}, b""))
            answer = _read_answer(s)
    assert answer.status == 403 and answer.json()["error"] == "unrouted_path"
    for path in ("/MCP", "/mcpx", "/sse", "/messages/?session_id=x"):
        answer = send(gateway.proxy_port, f"http://127.0.0.1:{vendor.port}{path}", message=jsonrpc("tools/call", PUSH))
        assert answer is None or answer.status != 200  # plain HTTP to a TLS port: another origin, nowhere to go
    assert vendor.requests() == []


async def test_https_through_connect_is_placed_by_the_connect_target(gateway, vendor):
    """CONNECT 127.0.0.1:T for the service https://localhost:T: governed, whatever SNI or Host say."""
    async with http_client(gateway, intercept=True) as client:
        url = f"https://127.0.0.1:{vendor.port}/mcp"
        r = await client.post(url, json=jsonrpc("initialize", INIT), headers={**MCP_HEADERS, "Host": "elsewhere.example"})
        assert r.status_code == 401
        r = await client.post(url, json=jsonrpc("tools/call", PUSH), headers={**MCP_HEADERS, **DEV})
        assert r.status_code in (200, 403) and "push_files" in r.text and "not available" in r.text.lower() \
            or r.status_code == 403
    assert vendor.tool_calls() == []


def test_a_host_header_naming_another_server_changes_nothing(gateway, upstream):
    with tunnel(gateway.proxy_port, f"127.0.0.1:{upstream.port}") as sock:
        body = json.dumps(jsonrpc("initialize", INIT)).encode()
        sock.sendall(_request("POST", "/mcp", "elsewhere.example", MCP_HEADERS, body))
        assert _read_answer(sock).status == 401
    assert upstream.requests() == []


def test_a_raw_tunnel_to_a_governed_server_is_refused(gateway, upstream):
    """ignore_hosts matched on the client-chosen Host would pass the bytes through unseen."""
    with tunnel(gateway.proxy_port, f"127.0.0.1:{upstream.port}") as sock:
        body = json.dumps(jsonrpc("initialize", INIT)).encode()
        sock.sendall(_request("POST", "/mcp", "pinned.example", MCP_HEADERS, body))
        answer = _read_answer(sock)
    assert answer is None or answer.status != 200
    assert upstream.requests() == []
    assert "refused a raw tunnel" in gateway.log()


# == item 7: the PRM well-known prefix is not a way past identity ================================


@pytest.mark.parametrize("path", [WELL_KNOWN + "/x", WELL_KNOWN + "/x/%2e%2e/mcp", WELL_KNOWN + "/%2e%2e/%2e%2e/mcp",
                                  WELL_KNOWN, WELL_KNOWN + "/mcp"])
def test_the_prm_prefix_does_not_skip_identity(gateway, upstream, front, path):
    """The front serves what a path means (a normalising server): /.well-known/.../%2e%2e/%2e%2e/mcp is /mcp."""
    # (push_files rather than the delete_repository, which waits for the client's confirmation)
    init, call = mcp_call(through_proxy(gateway, f"http://127.0.0.1:{front.server.port}{path}"), PUSH)
    assert (init, call) == (401, 401)
    assert upstream.tool_calls() == [] and front.raw_paths == []


def test_reading_the_prm_still_needs_no_credential(gateway, upstream):
    answer = send(gateway.proxy_port, f"http://127.0.0.1:{upstream.port}{WELL_KNOWN}/mcp", method="GET")
    assert answer.status == 200 and answer.json()["resource"] == upstream.url
    with_body = send(gateway.proxy_port, f"http://127.0.0.1:{upstream.port}{WELL_KNOWN}/mcp", method="GET",
                     message=jsonrpc("tools/call", DELETE))
    assert with_body.status == 401  # a GET with a body is not a read of a document


# == item 8: gateway mode, dot segments =============================================================


@pytest.mark.parametrize("path", ["/public/../mcp", "/public/%2e%2e/mcp", "/public/.%2E/mcp", "/public//../mcp",
                                  "/public/x/../../mcp"])
def test_dot_segments_do_not_leave_the_public_route(gateway, upstream, front, path):
    init, call = mcp_call(lambda m, h: send(gateway.port, path, message=m, headers=h), PUSH)
    assert (init, call) == (401, 401)  # the private route's key-auth, not the public route
    assert upstream.tool_calls() == [] and front.raw_paths == []


@pytest.mark.parametrize("path", ["/public/..%2fmcp", "/public/..%2Fmcp", "/public/..%5cmcp", "/public/..\\mcp",
                                  "/public/%2e%2e;/mcp"])
def test_encoded_separators_in_gateway_mode_are_refused(gateway, upstream, front, path):
    answer = send(gateway.port, path, message=jsonrpc("initialize", INIT))
    assert answer.status == 400 and answer.json()["error"] == "bad_request_target"
    assert upstream.requests() == [] and front.raw_paths == []


# == the legitimate user =============================================================================


async def test_official_client_through_another_name_is_governed(gateway, upstream):
    """An agent configured with http://localhost:P/mcp gets the service, with its policy."""
    url = f"http://localhost:{upstream.port}/mcp"
    async with mcp_session(url, headers=DEV, gateway=gateway, intercept=True) as session:
        names = {t.name for t in (await session.list_tools()).tools}
        assert "search_repositories" in names and "push_files" not in names
        assert not (await session.call_tool("search_repositories", {"query": "kong"})).isError
    async with mcp_session(url, headers=ADMIN, gateway=gateway, intercept=True) as session:
        assert not (await session.call_tool("push_files", PUSH["arguments"])).isError
    seen = upstream.requests()
    assert seen and {r["headers"]["host"] for r in seen} == {f"127.0.0.1:{upstream.port}"}  # sent to the service
    assert "apikey" not in str(seen)  # hide_credentials: it went through the route
    assert upstream.tool_calls() == ["search_repositories", "push_files"]


async def test_official_client_over_https_by_address(gateway, vendor):
    async with mcp_session(f"https://127.0.0.1:{vendor.port}/mcp", headers=ADMIN, gateway=gateway,
                           intercept=True) as session:
        assert not (await session.call_tool("search_repositories", {"query": "x"})).isError
    assert {r["headers"]["host"] for r in vendor.requests()} == {f"localhost:{vendor.port}"}


def test_an_encoded_path_reaches_the_upstream_canonical(gateway, upstream, front):
    answer = send(gateway.port, "/%6Dcp", message=jsonrpc("initialize", INIT), headers=ADMIN)
    assert answer.status == 200 and front.raw_paths == ["/mcp"]
    answer = send(gateway.proxy_port, f"http://127.0.0.1:{upstream.port}/%6Dcp", message=jsonrpc("initialize", INIT),
                  headers=ADMIN)
    assert answer.status == 200 and answer.headers["x-mcp-gateway-route"] == "github-mcp"


def test_the_public_route_stays_public(gateway, front):
    answer = send(gateway.port, "/public/x/../y", method="GET")
    assert answer.status == 404 and front.raw_paths == ["/public/y"]  # the canonical path, which the upstream lacks


def test_other_origins_pass_untouched(gateway, bystander):
    answer = send(gateway.proxy_port, f"http://127.0.0.1:{bystander.port}/%6Dcp/..%2fx/./y", method="GET")
    assert answer.status == 200 and answer.body == b"bystander"
    assert bystander.raw_paths == ["/%6Dcp/..%2fx/./y"]
