"""mitmweb running the gateway in gateway mode, read through its own REST API as its UI reads it
(issue 12 item 8): every governed flow names a real address, the route's upstream for a forwarded
one and the gateway's URL for one the gateway answered itself, never the listener's placeholder
reverse target; and showing it so routes nothing (a replay is governed again)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.gateway import BIN, ENTRY, MCP_HEADERS, DemoUpstream, Process, jsonrpc
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e

PLACEHOLDER_PORT = 9  # the reverse target named on the command line; no route goes there
PUSH = {"name": "push_files", "arguments": {"owner": "o", "repo": "r", "branch": "main", "message": "m",
                                            "files": [{"path": "a", "content": "b"}]}}


class Mitmweb:
    PASSWORD = "web-api-password-ui"

    def __init__(self, workdir: Path, policy: dict) -> None:
        policy_path = workdir / "web-policy.yaml"
        policy_path.write_text(yaml.safe_dump(policy))
        self.port, self.web_port = free_port(), free_port()
        cmd = [str(BIN / "mitmweb"), "-s", str(ENTRY), "--set", f"mcp_policy={policy_path}",
               "--set", f"confdir={workdir / 'mitmproxy-conf'}", "--set", f"web_port={self.web_port}",
               "--set", "web_open_browser=false", "--set", f"web_password={self.PASSWORD}",
               "--mode", f"reverse:http://127.0.0.1:{PLACEHOLDER_PORT}@127.0.0.1:{self.port}"]
        self.process = Process(cmd, workdir / "mitmweb.log")
        self.process.wait_for(r"Web server listening at")
        self.process.wait_for(r"policy version \d+ loaded")
        xsrf = "xsrf-token-for-tests"  # tornado checks that the header matches the cookie
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.web_port}", timeout=10,
                                headers={"Authorization": f"Bearer {self.PASSWORD}", "X-XSRFToken": xsrf},
                                cookies={"_mitmproxy_xsrf": xsrf})

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def flows(self, count: int, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            flows = [f for f in self.api.get("/flows").json() if f.get("response")]
            if len(flows) >= count:
                return flows
            assert time.monotonic() < deadline, f"mitmweb has {len(flows)} answered flows, not {count}"
            time.sleep(0.1)

    def stop(self) -> None:
        self.api.close()
        self.process.stop()


def shown(flow: dict) -> str:
    """The URL mitmweb's flow list shows (its RequestUtils.pretty_url)."""
    r = flow["request"]
    port = "" if {"http": 80, "https": 443}.get(r["scheme"]) == r["port"] else f":{r['port']}"
    return f"{r['scheme']}://{r['pretty_host']}{port}{r['path']}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mitmweb-ui")
    upstream = DemoUpstream(workdir, "--json-response")
    policy = {
        "consumer_groups": ["admin", "developer"],
        "consumers": {"dev-user": {"groups": ["developer"], "keys": ["dev-api-key"]}},
        "services": {"github": {"url": upstream.url}},
        "routes": {"github-mcp": {"service": "github", "paths": ["/github-mcp"], "key_auth": {},
                                  "acl": {"include_consumer_groups": True,
                                          "default_acl": [{"scope": "tools", "deny": ["developer"]}]}}},
    }
    web = Mitmweb(workdir, policy)
    yield web, upstream
    web.stop()
    upstream.stop()


def test_every_governed_flow_names_a_real_address(setup):
    web, upstream = setup
    with httpx.Client(timeout=20) as c:
        init = jsonrpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                      "clientInfo": {"name": "t", "version": "1"}})
        forwarded = c.post(web.url("/github-mcp"), json=init, headers={**MCP_HEADERS, "apikey": "dev-api-key"})
        no_key = c.post(web.url("/github-mcp"), json=init, headers=MCP_HEADERS)
        denied = c.post(web.url("/github-mcp"), json=jsonrpc("tools/call", PUSH, id=2),
                        headers={**MCP_HEADERS, "apikey": "dev-api-key",
                                 "Mcp-Session-Id": forwarded.headers.get("mcp-session-id", "")})
        unrouted = c.get(web.url("/nowhere"))
    assert forwarded.status_code == 200 and no_key.status_code == 401 and unrouted.status_code == 404
    assert "error" in denied.json()  # refused by the ACL, answered by the gateway
    flows = web.flows(4)
    urls = {f["request"]["path"] + f" {f['response']['status_code']}": shown(f) for f in flows}
    gateway = f"http://127.0.0.1:{web.port}"
    assert urls == {
        f"/mcp 200": f"{upstream.base}/mcp",  # forwarded: the route's upstream
        "/github-mcp 401": f"{gateway}/github-mcp",  # answered by the gateway: its URL, as the client used it
        "/github-mcp 200": f"{gateway}/github-mcp",  # the ACL's JSON-RPC refusal
        "/nowhere 404": f"{gateway}/nowhere",
    }
    assert all(f["request"]["port"] != PLACEHOLDER_PORT for f in flows)


def test_a_replayed_refusal_is_governed_again(setup):
    web, upstream = setup
    upstream.reset()
    # Head and body in one write: a request refused at its headers keeps its body (and can be
    # replayed) only if the body was already there; one sent later is never read (request_stream.py).
    body = json.dumps(jsonrpc("tools/list")).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in {**MCP_HEADERS, "X-Replay-Me": "1"}.items())
    with socket.create_connection(("127.0.0.1", web.port), timeout=20) as s:
        s.sendall(f"POST /github-mcp HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\n{head}Content-Length: {len(body)}\r\n"
                  f"Connection: close\r\n\r\n".encode() + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401"), answer
    before = web.flows(1)
    refused = next(f for f in before if dict(f["request"]["headers"]).get("X-Replay-Me") == "1")
    web.api.post(f"/flows/{refused['id']}/replay").raise_for_status()
    deadline = time.monotonic() + 15
    while True:
        replays = [f for f in web.flows(1) if f.get("is_replay") == "request" and f.get("response")
                   and dict(f["request"]["headers"]).get("X-Replay-Me") == "1"]
        if replays:
            break
        assert time.monotonic() < deadline, "the replay never got an answer"
        time.sleep(0.1)
    assert replays[0]["response"]["status_code"] == 401  # no key: refused again, by the gateway
    assert upstream.requests() == []  # nothing went upstream
