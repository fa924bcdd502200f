"""Kong's how-to series "use access controls for MCP tools" then "observe MCP traffic" (a decK file
with key-auth, ai-mcp-proxy ACLs and a global file-log), plus a global http-log, through a real
mitmdump: the file and a real HTTP endpoint receive Kong-shaped records of allowed and denied
calls, and never a key."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e

LOG_TOKEN = "log-endpoint-token-7c1d"
CASE = Path(__file__).resolve().parents[2] / "shared" / "kong-docs" / "cases" / "16-series-mcp-acls-observe-file-log.yaml"


class LogEndpoint:
    def __init__(self, status: int = 200) -> None:
        self.posts: list[tuple[dict[str, str], Any]] = []
        self.status = status
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                endpoint.posts.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                self.send_response(endpoint.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/kong-logs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kong-logging")
    upstream = DemoUpstream(workdir)
    endpoint = LogEndpoint()
    data = yaml.safe_load(CASE.read_text())
    data["services"][0]["url"] = upstream.url  # the how-to's service runs in Docker; the demo upstream here
    data["plugins"].append({"name": "http-log", "config": {"http_endpoint": endpoint.url, "method": "POST",
                                                           "headers": {"X-Log-Source": "mcp-gateway",
                                                                       "Authorization": "Bearer {vault://env/log-token}"}}})
    policy = workdir / "kong.yaml"
    policy.write_text(yaml.safe_dump(data, sort_keys=False))
    log_file = workdir / "file-log.jsonl"
    gw = Gateway(workdir, policy, intercept=False, env={"DECK_FILE_LOG_PATH": str(log_file), "LOG_TOKEN": LOG_TOKEN})
    yield gw, endpoint, log_file
    gw.stop()
    upstream.stop()
    endpoint.stop()


def session(client: httpx.Client, url: str, key: str) -> dict[str, str]:
    headers = {**MCP_HEADERS, "apikey": key}
    init = client.post(url, headers=headers, json=jsonrpc("initialize", {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}))
    assert init.status_code == 200, init.text
    return headers | {"mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}


def test_file_log_and_http_log_get_kong_shaped_records(running):
    gw, endpoint, log_file = running
    with httpx.Client(timeout=30) as client:
        headers = session(client, gw.url("/mcp"), "bob-key")
        allowed = client.post(gw.url("/mcp"), headers=headers,
                              json=jsonrpc("tools/call", {"name": "get_user", "arguments": {"id": "1"}}, id=2))
        denied = client.post(gw.url("/mcp"), headers=headers,
                             json=jsonrpc("tools/call", {"name": "list_users", "arguments": {}}, id=3))
    assert allowed.status_code == 200 and denied.status_code == 200
    assert "not available for consumer group 'developer'" in denied.text

    wait(lambda: log_file.exists() and len(log_file.read_text().splitlines()) >= 3)
    wait(lambda: len(endpoint.posts) >= 3)
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    posted = [body for _, body in endpoint.posts]
    for records in (lines, posted):
        by_id = {r["mcp"][0]["id"]: r for r in records if r["mcp"]}
        ok, no = by_id[2], by_id[3]
        for r in (ok, no):
            assert r["request"]["method"] == "POST" and r["request"]["uri"] == "/mcp"
            assert r["route"]["name"] == "mcp-acl-route" and r["service"]["name"] == "mcp-acl-service"
            assert r["consumer"]["username"] == "bob" and r["client_ip"] == "127.0.0.1"
            assert r["response"]["status"] == 200 and isinstance(r["started_at"], int)
            assert r["latencies"]["request"] >= 0 and r["request"]["querystring"] == {}
        assert ok["source"] == "upstream" and ok["latencies"]["proxy"] >= 0 and ok["upstream_uri"]
        assert ok["response"]["size"] == len(allowed.content) > 0  # the streamed answer, counted as relayed
        assert ok["mcp"][0] == {"decision": "allow", "rule": "acl.tools[get_user].allow", "reason": "acl",
                                "primitive": "tool", "name": "get_user", "method": "tools/call", "id": 2}
        assert no["source"] == "kong" and no["latencies"]["proxy"] == -1
        assert no["mcp"][0]["decision"] == "deny" and no["mcp"][0]["name"] == "list_users"
    everything = log_file.read_text() + json.dumps(endpoint.posts)
    assert "bob-key" not in everything and headers["mcp-session-id"] not in everything
    assert all(h.get("x-log-source") == "mcp-gateway" and h["content-type"] == "application/json"
               for h, _ in endpoint.posts)
    assert all(h["authorization"] == f"Bearer {LOG_TOKEN}" for h, _ in endpoint.posts)  # the resolved reference
    assert LOG_TOKEN not in gw.log() and LOG_TOKEN not in log_file.read_text()


def test_refused_key_is_logged_without_the_key(running):
    gw, endpoint, log_file = running
    before = len(endpoint.posts)
    resp = httpx.post(gw.url("/mcp"), headers={**MCP_HEADERS, "apikey": "forged-key-123"},
                      json=jsonrpc("tools/list"), timeout=30)
    assert resp.status_code == 401
    wait(lambda: len(endpoint.posts) > before)
    record = endpoint.posts[-1][1]
    assert record["response"]["status"] == 401 and "consumer" not in record
    assert "forged-key-123" not in json.dumps(endpoint.posts) + log_file.read_text()


def test_endpoint_down_requests_unaffected(tmp_path):
    upstream = DemoUpstream(tmp_path)
    data = yaml.safe_load(CASE.read_text())
    data["services"][0]["url"] = upstream.url
    data["plugins"] = [p for p in data["plugins"] if p["name"] != "file-log"]
    data["plugins"].append({"name": "http-log", "config": {"http_endpoint": f"http://127.0.0.1:{free_port()}/x",
                                                           "timeout": 500}})
    policy = tmp_path / "kong.yaml"
    policy.write_text(yaml.safe_dump(data, sort_keys=False))
    gw = Gateway(tmp_path, policy, intercept=False)
    try:
        with httpx.Client(timeout=30) as client:
            for _ in range(3):
                started = time.monotonic()
                session(client, gw.url("/mcp"), "bob-key")
                assert time.monotonic() - started < 2
        wait(lambda: "record(s) lost" in gw.log())
        line = next(line for line in gw.log().splitlines() if "record(s) lost" in line)
        assert "/x" not in line  # the host only: a path or query string may hold a token
    finally:
        gw.stop()
        upstream.stop()


def test_file_log_follows_a_rotation(running):
    gw, _, log_file = running
    wait(lambda: log_file.exists())
    rotated = log_file.with_suffix(".1")
    log_file.rename(rotated)
    time.sleep(1.2)  # the writer looks at the path at most once a second
    with httpx.Client(timeout=30) as client:
        session(client, gw.url("/mcp"), "bob-key")
        time.sleep(1.2)
        session(client, gw.url("/mcp"), "alice-key")
    wait(lambda: log_file.exists() and "alice" in log_file.read_text())
