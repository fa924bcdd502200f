"""Secret scanning end to end, through a real mitmdump: a result carrying a GitHub token is
redacted in a JSON answer (the demo upstream echoes the query) and in an SSE stream whose token
is split across two network writes (a raw upstream that holds the rest back until the client
has seen the events before it: nothing is buffered); a call whose arguments carry an AWS key
never reaches the upstream; an upstream echoing the credential the gateway injected never gets
it to the client, the audit log or the saved flows."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta

import httpx
import pytest
from mcp import McpError
from mitmproxy import io

from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, mcp_session
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

GHP = "ghp_" + "Zq8Rw2Lp5Tn7Vb3Xc9Md1Fh4Jk6Gs0Ay2Eu8"
AWS = "AKIA" + "IOSFODNN7EXAMPLE"
INJECTED = "upstream-injected-secret-7f3a9c"
CALL_TIMEOUT = timedelta(seconds=15)


class SplittingUpstream:
    """An MCP-ish upstream answering every tools/call with an SSE stream: a progress
    notification and the first part of the result event, then (once the test says the client
    has the notification, or after 10 s) the rest. The result echoes the Authorization header."""

    def __init__(self):
        self.release = threading.Event()
        self.calls: list[dict] = []

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        rpc = json.loads(body or b"{}")
        self.calls.append(rpc)
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        if rpc.get("method") != "tools/call":
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}
        result = {"jsonrpc": "2.0", "id": rpc["id"], "result": {
            "content": [{"type": "text", "text": f"token {GHP} and your header: {auth}"}],
            "structuredContent": {"token": GHP}}}
        stream = (b"event: message\ndata: " + json.dumps(note).encode() + b"\n\n"
                  + b"event: message\ndata: " + json.dumps(result).encode() + b"\n\n")
        cut = stream.index(GHP.encode()) + 12  # inside the first token
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": stream[:cut], "more_body": True})
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 10)
        await send({"type": "http.response.body", "body": stream[cut:]})


class LargeJsonUpstream:
    """Answers every tools/call with a JSON body of about 400 kB (with its Content-Length): the
    first 300 kB, then, once the test says the client has read some of it (or after 30 s), the
    rest, which carries a GitHub token and echoes the Authorization header near its end."""

    def __init__(self):
        self.release = threading.Event()
        self.rest_sent = False

    async def __call__(self, scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        text = "line of a large log\n" * 20_000 + f"token {GHP} and your header: {auth}"
        body = json.dumps({"jsonrpc": "2.0", "id": 6, "result": {"content": [{"type": "text", "text": text}]}}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body[:300_000], "more_body": True})
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        self.rest_sent = True
        await send({"type": "http.response.body", "body": body[300_000:]})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("secrets")


@pytest.fixture(scope="module")
def demo(workdir):
    up = DemoUpstream(workdir, "--json-response", name="demo")
    yield up
    up.stop()


def served(app):
    server = ThreadedServer(app)
    server.start()
    yield app, server
    server.stop()


@pytest.fixture(scope="module")
def splitting():
    yield from served(SplittingUpstream())


@pytest.fixture(scope="module")
def large():
    yield from served(LargeJsonUpstream())


@pytest.fixture(scope="module")
def gateway(workdir, demo, splitting, large):
    _, server = splitting
    inject = {"mode": "inject", "allow_anonymous": True,
              "add": {"headers": ["Authorization:Bearer {env://UPSTREAM_TOKEN}"]}}
    policy = {
        "services": {"demo": {"url": demo.url}, "raw": {"url": server.base_url + "/mcp"},
                     "large": {"url": large[1].base_url + "/mcp"}},
        "routes": {
            "echoing": {"service": "demo", "paths": ["/echoing"], "integrity": {"secrets": {"arguments": "audit"}}},
            "strict": {"service": "demo", "paths": ["/strict"], "integrity": {"secrets": {}}},
            "split": {"service": "raw", "paths": ["/split"], "credentials": inject,
                      "integrity": {"secrets": {}}},
            "large": {"service": "large", "paths": ["/large"], "credentials": inject,
                      "integrity": {"secrets": {}}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False, env={"UPSTREAM_TOKEN": INJECTED},
                 extra=["--set", f"mcp_audit={workdir / 'audit.jsonl'}", "--set", f"save_stream_file={workdir / 'flows.mitm'}"])
    yield gw
    gw.stop()


async def test_json_result_with_a_token_is_redacted(gateway):
    async with mcp_session(gateway.url("/echoing")) as s:
        result = await s.call_tool("search_repositories", {"query": f"leaked {GHP}"}, read_timeout_seconds=CALL_TIMEOUT)
    text = result.content[0].text
    assert GHP not in text and "[redacted:github_token]" in text
    assert json.loads(text)["query"] == "leaked [redacted:github_token]"  # structure kept: still valid JSON


async def test_arguments_with_an_aws_key_are_blocked(gateway, demo):
    demo.reset()
    async with mcp_session(gateway.url("/strict")) as s:
        with pytest.raises(McpError) as refused:
            await s.call_tool("create_issue", {"owner": "o", "repo": "r", "title": "t", "body": f"key={AWS}"},
                              read_timeout_seconds=CALL_TIMEOUT)
        assert "aws_access_key in params.arguments.body" in refused.value.error.message
        assert AWS not in refused.value.error.message
        ok = await s.call_tool("search_repositories", {"query": "kong"}, read_timeout_seconds=CALL_TIMEOUT)
        assert not ok.isError
    assert "create_issue" not in demo.tool_calls() and "search_repositories" in demo.tool_calls()


async def test_sse_split_inside_the_token_and_the_echoed_injected_credential(gateway, splitting, workdir):
    app, _ = splitting
    app.release.clear()
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "anything", "arguments": {}}}
    received = b""
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream("POST", gateway.url("/split"), json=call, headers=MCP_HEADERS) as resp:
            assert resp.status_code == 200
            chunks = resp.aiter_raw()
            while b"notifications/progress" not in received:  # before the upstream sent the rest:
                received += await asyncio.wait_for(anext(chunks), 10)  # the gateway streams, event by event
            app.release.set()
            async for chunk in chunks:
                received += chunk
    assert app.calls and app.calls[-1]["id"] == 5
    assert GHP.encode() not in received and INJECTED.encode() not in received
    events = [json.loads(line[6:]) for line in received.decode().splitlines() if line.startswith("data: ")]
    result = events[-1]["result"]
    assert result["content"][0]["text"] == "token [redacted:github_token] and your header: Bearer [redacted]"
    assert result["structuredContent"] == {"token": "[redacted:github_token]"}
    # nor in what the gateway writes
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "integrity.secrets" not in (workdir / "audit.jsonl").read_text():
        time.sleep(0.2)
    audit = (workdir / "audit.jsonl").read_text()
    assert '"integrity.secrets"' in audit and GHP not in audit and INJECTED not in audit


async def test_a_large_json_answer_is_relayed_as_it_comes_and_redacted(gateway, large):
    # (protocol/json_relay.py) the client has most of the answer before the upstream sent the
    # part with the token, and gets that part redacted, in the length the upstream declared
    app, _ = large
    app.release.clear()
    app.rest_sent = False
    call = {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "anything", "arguments": {}}}
    received = b""
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream("POST", gateway.url("/large"), json=call, headers=MCP_HEADERS) as resp:
            assert resp.status_code == 200
            declared = int(resp.headers["content-length"])
            chunks = resp.aiter_raw()
            while len(received) < 200_000:  # all of it before the upstream sent the rest
                received += await asyncio.wait_for(anext(chunks), 10)
            assert not app.rest_sent
            app.release.set()
            async for chunk in chunks:
                received += chunk
    assert len(received) == declared
    assert GHP.encode() not in received and INJECTED.encode() not in received
    text = json.loads(received)["result"]["content"][0]["text"]
    assert text.endswith("token [redacted:github_token] and your header: Bearer [redacted]")
    assert text.count("line of a large log") == 20_000


def test_saved_flows_hold_no_secret(gateway, workdir):
    gateway.stop()  # flushes the flow file
    with open(workdir / "flows.mitm", "rb") as f:
        flows = list(io.FlowReader(f).stream())
    assert flows
    for flow in flows:
        if flow.response is not None and flow.response.raw_content:
            body = flow.response.get_content(strict=False) or b""
            assert GHP.encode() not in body and INJECTED.encode() not in body
