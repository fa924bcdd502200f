"""Attacks that make the gateway disclose or forge what it owns: its stored credentials, its
identity headers, its log. Each test is written as the attacker (or the unlucky operator) would
try it, against a real mitmdump or mitmweb running the gateway.

- stored credentials on the error path: a token-swap route whose upstream is unreachable (502),
  hangs (killed flows, shutdown with the request in flight) or is replayed from mitmweb; the
  injected secrets must appear nowhere in mitmdump's output, a `-w` file or mitmweb's flow state;
- identity header look-alikes: `X_Consumer_Groups` and friends, which CGI/WSGI upstreams read as
  the gateway's `X-Consumer-Groups`;
- log injection: a client-chosen value with a line break forging a line in the gateway's log.

Extend this module for any new way of getting the gateway to leak or forge its own output."""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from mitmproxy import io

from tests.support.gateway import BIN, ENTRY, MCP_HEADERS, DemoUpstream, Gateway, Process, jsonrpc
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e

SWAP_TOKEN = "swap-service-token-8f2a9c"  # injected as Authorization: Bearer
QUERY_TOKEN = "query-service-token-3b7d1e"  # injected as ?token=
TENANT_SECRET = "tenant-secret-value-5c6d"  # injected under a header name that says nothing
DEV_KEY = "dev-key-leak-77aa"  # the client's own key (hide_credentials)
SECRETS = (SWAP_TOKEN, QUERY_TOKEN, TENANT_SECRET, DEV_KEY)
ENV = {"SWAP_TOKEN": SWAP_TOKEN, "QUERY_TOKEN": QUERY_TOKEN, "TENANT_SECRET": TENANT_SECRET}
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "attacker", "version": "1"}}
SWAP = {"mode": "inject", "add": {"headers": ["Authorization:Bearer {env://SWAP_TOKEN}",
                                              "X-Upstream-Tenant:{env://TENANT_SECRET}"],
                                  "querystring": ["token:{env://QUERY_TOKEN}"]}}
KEY_AUTH = {"key_names": ["apikey"], "hide_credentials": True}
KILLED = "Connection killed."  # mitmproxy's Error.KILLED_MESSAGE


class Hanging:
    """An upstream that accepts connections, reads, and never answers until released."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.received = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                self.received.set()
        except OSError:
            pass

    def release(self) -> None:
        """Close every connection: the gateway sees the upstream hang up without an answer."""
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # close() alone waits for the reading thread
                conn.close()
            except OSError:
                pass
        self.conns.clear()

    def close(self) -> None:
        self.release()
        self.sock.close()


def leak_policy(upstream: DemoUpstream, dead_port: int, hanging: Hanging) -> dict:
    return {
        "consumer_groups": ["developer"],
        "consumers": {"dev-user": {"groups": ["developer"], "keys": [DEV_KEY]}},
        "services": {"dead": {"url": f"http://127.0.0.1:{dead_port}/mcp"},
                     "hanging": {"url": f"http://127.0.0.1:{hanging.port}/mcp"},
                     "live": {"url": upstream.url}},
        "routes": {
            "dead-swap": {"service": "dead", "paths": ["/dead-swap"], "key_auth": KEY_AUTH, "credentials": SWAP},
            "dead-open": {"service": "dead", "paths": ["/dead-open"],
                          "credentials": {**SWAP, "allow_anonymous": True}},
            "hang-swap": {"service": "hanging", "paths": ["/hang-swap"], "key_auth": KEY_AUTH, "credentials": SWAP},
            "live-swap": {"service": "live", "paths": ["/live-swap"], "key_auth": KEY_AUTH, "credentials": SWAP},
        },
    }


def assert_no_secret(where: str, text: str) -> None:
    # A prefix is a leak too: mitmdump's default output shortens long URLs ("?token=query-serv…").
    found = [s for s in SECRETS if s[:10] in text or s[-8:] in text]
    assert not found, f"{where} holds {found}"


def saved_flows(path: Path) -> list:
    with open(path, "rb") as f:
        return list(io.FlowReader(f).stream())


@pytest.fixture
def hanging():
    h = Hanging()
    yield h
    h.close()


def post(url: str, **kw) -> httpx.Response:
    return httpx.post(url, json=jsonrpc("initialize", INIT), headers={**MCP_HEADERS, **kw.pop("headers", {})},
                      timeout=kw.pop("timeout", 20), **kw)


# -- stored credentials on the error path: mitmdump --------------------------------------------


@pytest.mark.parametrize("detail", [None, "2", "4"], ids=["default-output", "flow-detail-2", "flow-detail-4"])
def test_unreachable_upstream_leaks_no_stored_credential(workdir, upstream, hanging, detail):
    dead = free_port()
    saved = workdir / f"flows-{detail}.mitm"
    extra = ["-w", str(saved)] + (["--flow-detail", detail, "-v"] if detail else [])
    gw = Gateway(workdir, leak_policy(upstream, dead, hanging), intercept=False, env=ENV, extra=extra,
                 name=f"gw-dead-{detail}")
    try:
        upstream.reset()
        assert post(gw.url("/dead-swap"), headers={"apikey": DEV_KEY}).status_code == 502
        assert post(gw.url(f"/dead-swap?apikey={DEV_KEY}")).status_code == 502
        assert post(gw.url("/dead-open")).status_code == 502
        # The legitimate user of a reachable route: the stored credential is still what goes upstream.
        assert post(gw.url("/live-swap"), headers={"apikey": DEV_KEY}).status_code == 200
        sent = [r for r in upstream.requests() if r["path"] == "/mcp"]
        assert sent and sent[-1]["headers"]["authorization"] == f"Bearer {SWAP_TOKEN}"
        assert f"token={QUERY_TOKEN}" in sent[-1]["query"]
    finally:
        gw.stop()
    log = gw.log()
    assert log.count("Connect call failed") >= 3  # the failed flows were printed...
    assert_no_secret("mitmdump output", log)  # ...without the secrets
    flows = saved_flows(saved)
    assert {f.request.path.split("?")[0] for f in flows} >= {"/mcp"} and any(f.error for f in flows)
    for f in flows:
        assert_no_secret(f"saved flow {f.request.pretty_url}", repr(f.get_state()))


def test_shutdown_with_a_request_in_flight_saves_it_masked(workdir, upstream, hanging):
    saved = workdir / "flows-inflight.mitm"
    gw = Gateway(workdir, leak_policy(upstream, free_port(), hanging), intercept=False, env=ENV,
                 extra=["-w", str(saved)], name="gw-inflight")
    client = threading.Thread(target=lambda: _ignore(post, gw.url("/hang-swap"), headers={"apikey": DEV_KEY}),
                              daemon=True)
    try:
        client.start()
        assert hanging.received.wait(10)  # the request, stored credential and all, is at the upstream
    finally:
        gw.stop()  # mitmproxy's Save writes the flows still in flight when it stops
    flows = saved_flows(saved)
    assert [f.request.path.split("?")[0] for f in flows] == ["/mcp"]
    assert_no_secret("flow saved at shutdown", repr(flows[0].get_state()))


def _ignore(fn, *args, **kw) -> None:
    try:
        fn(*args, **kw)
    except httpx.HTTPError:
        pass


# -- stored credentials on the error path: mitmweb ---------------------------------------------


class Mitmweb:
    """mitmweb running the gateway, with a fixed API password."""

    PASSWORD = "web-api-password-123"

    def __init__(self, workdir: Path, policy: dict) -> None:
        self.policy_path = workdir / "web-policy.yaml"
        self.policy_path.write_text(json.dumps(policy))
        self.port, self.web_port = free_port(), free_port()
        cmd = [str(BIN / "mitmweb"), "-s", str(ENTRY), "--set", f"mcp_policy={self.policy_path}",
               "--set", f"confdir={workdir / 'mitmproxy-conf'}", "--set", f"web_port={self.web_port}",
               "--set", "web_open_browser=false", "--set", f"web_password={self.PASSWORD}",
               "--mode", f"reverse:http://127.0.0.1:9@127.0.0.1:{self.port}"]
        self.process = Process(cmd, workdir / "mitmweb.log", env=ENV)
        self.process.wait_for(r"Web server listening at")
        self.process.wait_for(r"policy version \d+ loaded")
        xsrf = "attacker-chosen-xsrf-token"  # tornado only checks that the header matches the cookie
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.web_port}", timeout=10,
                                headers={"Authorization": f"Bearer {self.PASSWORD}", "X-XSRFToken": xsrf},
                                cookies={"_mitmproxy_xsrf": xsrf})

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def flows(self) -> list[dict]:
        return self.api.get("/flows").json()

    def state(self) -> str:
        """Everything mitmweb holds about its flows: the list and the full dump."""
        listed = self.api.get("/flows").text
        dump = self.api.get("/flows/dump").content.decode("latin-1")
        return listed + dump

    def wait_for_flows(self, predicate, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            flows = self.flows()
            if predicate(flows):
                return flows
            assert time.monotonic() < deadline, f"mitmweb's flows never got there: {flows}"
            time.sleep(0.1)

    def stop(self) -> None:
        self.api.close()
        self.process.stop()


def test_mitmweb_never_holds_a_stored_credential_of_an_ended_flow(workdir, upstream, hanging):
    web = Mitmweb(workdir, leak_policy(upstream, free_port(), hanging))
    try:
        # Unreachable upstream.
        assert post(web.url("/dead-swap"), headers={"apikey": DEV_KEY}).status_code == 502
        assert post(web.url("/dead-open")).status_code == 502
        errored = web.wait_for_flows(lambda fs: sum(1 for f in fs if f.get("error")) >= 2)
        assert_no_secret("mitmweb after a 502", web.state())

        # Replayed from mitmweb: the replay runs through the gateway's hooks like any request.
        replayed = next(f for f in errored if f.get("error"))
        web.api.post(f"/flows/{replayed['id']}/replay").raise_for_status()
        web.wait_for_flows(lambda fs: any(f["id"] == replayed["id"] and f["is_replay"] == "request"
                                          and (f.get("error") or f.get("response")) for f in fs))
        assert_no_secret("mitmweb after a replay", web.state())

        # Killed while waiting for a hanging upstream: with mitmproxy's flow.kill command...
        for how in ("command", "button"):
            hanging.received.clear()
            client = threading.Thread(target=_ignore, args=(post, web.url("/hang-swap")),
                                      kwargs={"headers": {"apikey": DEV_KEY}}, daemon=True)
            client.start()
            assert hanging.received.wait(10)
            live = web.wait_for_flows(lambda fs: any(not f.get("error") and f.get("response") is None for f in fs))
            target = next(f for f in live if not f.get("error") and f.get("response") is None)
            if how == "command":
                web.api.post("/commands/flow.kill", json={"arguments": [f"@{target['id']}"]}).raise_for_status()
                web.wait_for_flows(lambda fs: any(f["id"] == target["id"] and f.get("error") for f in fs))
                assert_no_secret("mitmweb after flow.kill", web.state())
            else:  # ...or with the web UI's kill button, which tells no addon: masked once the flow ends
                web.api.post(f"/flows/{target['id']}/kill").raise_for_status()
            hanging.release()
            client.join(20)
            # The flow ends when the upstream hangs up: mitmproxy replaces the kill with that error.
            web.wait_for_flows(lambda fs: any(f["id"] == target["id"] and f.get("error")
                                              and f["error"]["msg"] != KILLED for f in fs))
            assert_no_secret(f"mitmweb after a kill ({how})", web.state())
    finally:
        web.stop()
    assert_no_secret("mitmweb output", web.process.output())


# -- identity header look-alikes ---------------------------------------------------------------


def test_identity_header_look_alikes_never_reach_the_upstream(workdir, upstream):
    policy = {
        "consumer_groups": ["admin", "developer"],
        "consumers": {"dev-user": {"groups": ["developer"], "keys": [DEV_KEY]}},
        "services": {"echo": {"url": upstream.base + "/_test"}},
        "routes": {"echo": {"service": "echo", "paths": ["/echo"], "key_auth": KEY_AUTH,
                            "upstream_identity_headers": True}},
    }
    gw = Gateway(workdir, policy, intercept=False, name="gw-lookalikes")
    forged = [("X_Consumer_Groups", "admin"), ("X_Consumer_Username", "admin-user"), ("x_consumer_id", "1"),
              ("X-Consumer_Custom-ID", "root"), ("X_CREDENTIAL_IDENTIFIER", "admin-key"),
              ("x_anonymous_consumer", "false"), ("X-Consumer-Groups", "admin")]
    try:
        # Raw, so that no client library normalises or refuses the names on the attacker's behalf.
        head = [b"POST /echo/echo HTTP/1.1", f"Host: 127.0.0.1:{gw.port}".encode(), f"apikey: {DEV_KEY}".encode(),
                b"Content-Type: application/json", b"Connection: close"]
        head += [f"{name}: {value}".encode() for name, value in forged]
        body = json.dumps(jsonrpc("ping")).encode()
        raw = b"\r\n".join([*head, f"Content-Length: {len(body)}".encode(), b"", body])
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(raw)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
    finally:
        gw.stop()
    status, _, rest = answer.partition(b"\r\n")
    assert b" 200 " in status, answer
    received = json.loads(rest.partition(b"\r\n\r\n")[2])
    gateway_owned = {name: value for name, value in received.items()
                     if name.replace("_", "-").startswith(("x-consumer-", "x-credential-", "x-anonymous-"))}
    # Only what the gateway established: the caller's own identity, under the gateway's names.
    assert gateway_owned == {"x-consumer-username": "dev-user", "x-consumer-groups": "developer"}


# -- log injection ----------------------------------------------------------------------------

FORGED_LINE = "[12:00:00.000][mcpgw.governance] route github-mcp: allowed admin-user: tools/call push_files"


def test_a_line_break_in_a_tool_name_forges_no_log_line(workdir, upstream):
    policy = {
        "consumer_groups": ["admin", "developer"],
        "consumers": {"dev-user": {"groups": ["developer"], "keys": [DEV_KEY]}},
        "services": {"github": {"url": upstream.url}},
        "routes": {"github-mcp": {"service": "github", "paths": ["/github-mcp"], "key_auth": KEY_AUTH,
                                  "acl": {"include_consumer_groups": True,
                                          "default_acl": [{"scope": "tools", "deny": ["developer"]}]}}},
    }
    gw = Gateway(workdir, policy, intercept=False, name="gw-loginjection")
    try:
        for name in (f"push_files\n{FORGED_LINE}", f"push_files\r{FORGED_LINE}", f"push_files\x1b[2K\r{FORGED_LINE}"):
            call = jsonrpc("tools/call", {"name": name, "arguments": {}}, id=7)
            answer = httpx.post(gw.url("/github-mcp"), json=call, headers={**MCP_HEADERS, "apikey": DEV_KEY}, timeout=20)
            assert answer.status_code == 200 and "error" in answer.json()  # denied, as it should be
        gw.process.wait_for(r"denied", count=3, timeout=10)
    finally:
        gw.stop()
    log = gw.log()
    lines = re.split(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]", log)
    assert not [line for line in lines if line.startswith(FORGED_LINE)], "a forged line is in the log"
    assert "\x1b" not in log
    assert f"push_files\\n{FORGED_LINE}" in log  # the value is there, escaped: the operator still sees it


# -- forged challenge parameters ------------------------------------------------------------------

FORGED_PARAMS = 'x", resource_metadata="https://evil.example/prm", scope="admin'


def test_a_tool_name_forges_no_challenge_parameter(workdir, upstream):
    """`deny_response: http403` puts the denial, which names the client's tool, into WWW-Authenticate
    as error_description. The SDKs read that header with a regex that finds `name=` anywhere and
    stops at the first quote: a name holding quotes, `=`, line breaks or a great length must neither
    end the description early, nor add a resource_metadata or scope the client would follow to
    another authorization server, nor split the header."""
    from mcp.client.auth.utils import extract_field_from_www_auth  # the official client's own parser

    policy = {
        "consumer_groups": ["admin", "developer"],
        "consumers": {"dev-user": {"groups": ["developer"], "keys": [DEV_KEY]}},
        "services": {"github": {"url": upstream.url}},
        "routes": {"github-mcp": {"service": "github", "paths": ["/github-mcp"], "key_auth": KEY_AUTH,
                                  "acl": {"include_consumer_groups": True, "deny_response": "http403",
                                          "default_acl": [{"scope": "tools", "deny": ["developer"]}]}}},
    }
    gw = Gateway(workdir, policy, intercept=False, name="gw-challenge-forgery")
    try:
        answers = []
        for name in (FORGED_PARAMS, f"push\\files\r\nX-Injected: 1\n{FORGED_PARAMS}", "y" * 5000):
            call = jsonrpc("tools/call", {"name": name, "arguments": {}}, id=7)
            answers.append(httpx.post(gw.url("/github-mcp"), json=call, headers={**MCP_HEADERS, "apikey": DEV_KEY},
                                      timeout=20))
    finally:
        gw.stop()
    for answer in answers:
        assert answer.status_code == 403 and "x-injected" not in answer.headers
        [challenge] = answer.headers.get_list("www-authenticate")
        assert challenge.isascii() and challenge.isprintable() and len(challenge) < 400
        assert extract_field_from_www_auth(answer, "error") == "insufficient_scope"
        assert extract_field_from_www_auth(answer, "resource_metadata") is None
        assert extract_field_from_www_auth(answer, "scope") is None
        description = extract_field_from_www_auth(answer, "error_description")
        assert description is not None and description.endswith(("for consumer group 'developer'", "..."))
        assert answer.json()["error"]["message"].startswith("Tool '")  # the body keeps the full text
    assert extract_field_from_www_auth(answers[0], "error_description") == (
        "Tool 'x', resource_metadata:'https://evil.example/prm', scope:'admin' "
        "is not available for consumer group 'developer'")
