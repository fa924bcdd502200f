"""The foundation, end to end: a real mitmdump running the gateway, the demo upstream (official MCP
SDK server) and the official MCP client, in gateway mode and in intercept mode (HTTPS through the
proxy, trusting the mitmproxy CA)."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import mcp.types as types
import pytest

from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, http_client, jsonrpc, mcp_session, parse_mcp_body

pytestmark = pytest.mark.e2e

INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


@pytest.fixture(scope="module")
def upstream(workdir):
    up = DemoUpstream(workdir, name="sse")
    yield up
    up.stop()


@pytest.fixture(scope="module")
def upstream_json(workdir):
    up = DemoUpstream(workdir, "--json-response", name="json")
    yield up
    up.stop()


@pytest.fixture(scope="module")
def upstream_tls(workdir):
    up = DemoUpstream(workdir, tls=True, name="tls")
    yield up
    up.stop()


def policy_for(upstream, upstream_json, upstream_tls) -> dict:
    return {
        "gateway": {"debug_headers": True},
        "services": {"gh": {"url": upstream.url}, "gh-json": {"url": upstream_json.url},
                     "gh-root": {"url": upstream.base}, "vendor": {"url": upstream_tls.url}},
        "routes": {
            "github-mcp": {"service": "gh", "paths": ["/github-mcp"],
                           "cors": {"origins": ["https://app.example.com"]}},
            "github-json": {"service": "gh-json", "paths": ["/github-json"]},
            "github-legacy": {"service": "gh-root", "paths": ["/github-legacy"]},
            "vendor": {"service": "vendor", "paths": ["/vendor-mcp"]},
        },
    }


@pytest.fixture(scope="module")
def gateway(workdir, upstream, upstream_json, upstream_tls):
    gw = Gateway(workdir, policy_for(upstream, upstream_json, upstream_tls))
    yield gw
    gw.stop()


async def sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(role="assistant", model="test-model",
                                     content=types.TextContent(type="text", text="a short summary"))


async def elicitation(context, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"confirm": True})


async def exercise_full_session(session) -> None:
    tools = (await session.list_tools()).tools
    assert len(tools) >= 75
    result = await session.call_tool("search_repositories", {"query": "kong"})
    assert not result.isError and "kong" in result.content[0].text
    resources = (await session.list_resources()).resources
    assert resources
    read = await session.read_resource(resources[0].uri)
    assert read.contents
    prompts = (await session.list_prompts()).prompts
    assert {p.name for p in prompts} >= {"issue_triage"}
    prompt = await session.get_prompt("issue_triage", {"owner": "octocat", "repo": "hello-world", "issue_number": "1"})
    assert prompt.messages
    sampled = await session.call_tool("summarize_issue", {"owner": "octocat", "repo": "hello-world", "issue_number": 1})
    assert "a short summary" in sampled.content[0].text
    elicited = await session.call_tool("delete_repository", {"owner": "octocat", "repo": "hello-world"})
    assert "deleted octocat/hello-world" in elicited.content[0].text

    received: list[tuple[float, float]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        server_time = float(re.search(r"t=([0-9.]+)", message or "").group(1))
        received.append((time.time(), server_time))

    steps, delay_ms = 5, 300
    await session.call_tool("run_workflow", {"owner": "o", "repo": "r", "workflow_id": "ci", "steps": steps,
                                             "delay_ms": delay_ms}, progress_callback=on_progress)
    done = time.time()
    assert len(received) == steps
    for arrived, sent in received:
        assert arrived - sent < 1.0, "progress was held back"
    # The first notification arrived while the call still had most of its steps to run.
    assert done - received[0][0] >= (steps - 1) * delay_ms / 1000 * 0.6


async def test_gateway_mode_full_mcp_session(gateway, upstream):
    async with mcp_session(gateway.url("/github-mcp"), sampling_callback=sampling,
                           elicitation_callback=elicitation) as session:
        await exercise_full_session(session)


async def test_intercept_mode_full_mcp_session_over_https(gateway, upstream_tls):
    upstream_tls.reset()
    async with mcp_session(upstream_tls.url, gateway=gateway, intercept=True, sampling_callback=sampling,
                           elicitation_callback=elicitation) as session:
        await exercise_full_session(session)
    seen = upstream_tls.requests()
    assert seen and all(r["headers"]["host"] == f"localhost:{upstream_tls.port}" for r in seen)
    assert "policy version" in gateway.log()


async def test_intercept_mode_governs_the_vendor_url(gateway, upstream_tls):
    """The debug header shows the request was matched to the vendor route, not passed through."""
    async with http_client(gateway, intercept=True) as client:
        r = await client.post(upstream_tls.url, json=jsonrpc("initialize", INIT), headers=MCP_HEADERS)
        assert r.status_code == 200 and r.headers["x-mcp-gateway-route"] == "vendor"
        # Same origin, outside the service URL: a governed origin answers its routes' paths only.
        other = await client.get(f"{upstream_tls.base}/_test/echo")
        assert other.status_code == 403 and other.json()["error"] == "unrouted_path"


async def test_json_answers_and_legacy_transport(gateway):
    async with mcp_session(gateway.url("/github-json")) as session:
        assert len((await session.list_tools()).tools) >= 75
        assert not (await session.call_tool("get_me", {})).isError
    async with mcp_session(gateway.url("/github-legacy/sse"), legacy=True) as session:
        assert len((await session.list_tools()).tools) >= 75
        assert not (await session.call_tool("search_code", {"query": "x"})).isError


def test_http2_client_through_tls_gateway_listener(gateway):
    """HTTP/2 over TLS on the gateway listener, JSON and SSE answers (curl: httpx offers http/1.1
    first, and mitmproxy honours the client's preference, so the SDK client always gets HTTP/1.1)."""
    import json
    import shutil
    import subprocess

    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    url = f"https://127.0.0.1:{gateway.port}/github-mcp"

    def post(body: dict, *headers: str) -> tuple[str, str]:
        out = subprocess.run([curl, "-sS", "--http2", "--cacert", str(gateway.ca_cert), "-D", "-", url,
                              "-H", "Content-Type: application/json", "-H", "Accept: application/json, text/event-stream",
                              *[a for h in headers for a in ("-H", h)], "-d", json.dumps(body)],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return out.split("\n", 1)[0], out  # status line, and everything (headers then body)

    head, body = post(jsonrpc("initialize", INIT))
    assert head.startswith("HTTP/2 200")
    sid = re.search(r"^mcp-session-id: (\S+)", body, re.M | re.I).group(1)
    post(jsonrpc("notifications/initialized", id=None), f"Mcp-Session-Id: {sid}")
    head, body = post(jsonrpc("tools/list", id=2), f"Mcp-Session-Id: {sid}", "MCP-Protocol-Version: 2025-06-18")
    assert head.startswith("HTTP/2 200") and "text/event-stream" in body
    events = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]
    assert events, (head, body)
    tools = events[0]["result"]["tools"]
    assert len(tools) >= 75


async def test_transport_details_pass_untouched(gateway, upstream):
    """Session ids, protocol versions, 202s, the GET stream, DELETE and Last-Event-ID resumption."""
    async with http_client(gateway) as client:
        url = gateway.url("/github-mcp")
        r = await client.post(url, json=jsonrpc("initialize", INIT), headers=MCP_HEADERS)
        sid = r.headers["mcp-session-id"]
        assert r.headers["content-type"].startswith("text/event-stream")
        assert parse_mcp_body(r)[0]["result"]["protocolVersion"] == "2025-06-18"
        h = {**MCP_HEADERS, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
        r = await client.post(url, json=jsonrpc("notifications/initialized", id=None), headers=h)
        assert r.status_code == 202
        # A tool call answered on an SSE stream whose events carry ids; resume after the first one.
        r = await client.post(url, json=jsonrpc("tools/call", {"name": "run_workflow", "arguments": {
            "owner": "o", "repo": "r", "workflow_id": "w", "steps": 2, "delay_ms": 10}, "_meta": {"progressToken": 7}},
            id=5), headers=h)
        ids = re.findall(r"^id: ?(.+)$", r.text, re.M)
        assert len(ids) >= 2
        async with client.stream("GET", url, headers={**h, "Accept": "text/event-stream",
                                                      "Last-Event-ID": ids[0].strip()}) as stream:
            assert stream.status_code == 200
            replay = b""
            async for chunk in stream.aiter_bytes():
                replay += chunk
                if b'"id":5' in replay:
                    break
        assert b'"result"' in replay  # the response after the first event was replayed
        r = await client.delete(url, headers=h)
        assert r.status_code == 200
        r = await client.post(url, json=jsonrpc("tools/list", id=9), headers=h)
        assert r.status_code == 404  # the session is gone, and the client is told so unchanged
    seen = [x for x in upstream.requests() if x["headers"].get("mcp-session-id") == sid]
    assert {x["method"] for x in seen} >= {"POST", "GET", "DELETE"}
    assert all(x["headers"].get("mcp-protocol-version") == "2025-06-18" for x in seen)


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))


async def test_50mb_sse_stream_is_not_buffered(gateway):
    before = vm_hwm_kib(gateway.process.proc.pid)
    total = 0
    async with http_client(gateway) as client:
        async with client.stream("GET", gateway.url("/github-legacy/_test/big-sse?mb=50"),
                                 headers={"Accept": "text/event-stream"}) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_raw():
                total += len(chunk)
    grown_mib = (vm_hwm_kib(gateway.process.proc.pid) - before) / 1024
    assert total == 50 * 1024 * 1024
    assert grown_mib < 30, f"gateway peak memory grew by {grown_mib:.1f} MiB"


async def test_unknown_path_is_404_and_never_forwarded(gateway, upstream):
    upstream.reset()
    async with http_client(gateway) as client:
        for path in ("/", "/nope", "/mcp", "/github", "/.well-known/oauth-protected-resource/nope"):
            r = await client.post(gateway.url(path), json=jsonrpc("tools/list"), headers=MCP_HEADERS)
            assert r.status_code == 404 and r.json()["message"]
    assert upstream.requests() == []


async def test_host_and_origin_checks(gateway, upstream):
    upstream.reset()
    async with http_client(gateway) as client:
        url = gateway.url("/github-mcp")
        r = await client.post(url, json=jsonrpc("initialize", INIT), headers={**MCP_HEADERS, "Host": "evil.example"})
        assert r.status_code == 403 and "mcp_public_hosts" in r.json()["message"]
        r = await client.post(url, json=jsonrpc("initialize", INIT),
                              headers={**MCP_HEADERS, "Origin": "https://evil.example"})
        assert r.status_code == 403 and "cors.origins" in r.json()["message"]
        r = await client.post(gateway.url("/github-json"), json=jsonrpc("initialize", INIT),
                              headers={**MCP_HEADERS, "Origin": "https://app.example.com"})
        assert r.status_code == 403  # allowed on github-mcp only
        assert upstream.requests() == []
        r = await client.post(url, json=jsonrpc("initialize", INIT),
                              headers={**MCP_HEADERS, "Origin": "https://app.example.com", "Host": "localhost"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "Mcp-Session-Id" in r.headers["access-control-expose-headers"]
        pre = await client.options(url, headers={"Origin": "https://app.example.com",
                                                 "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "content-type,mcp-session-id"})
        assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
        assert pre.headers["access-control-allow-headers"] == "content-type,mcp-session-id"
    assert [r["method"] for r in upstream.requests()] == ["POST"]  # the preflight was answered by the gateway


async def test_reload_under_load_drops_nothing(workdir, upstream_json):
    """200 requests from 10 clients while the policy is rewritten 20 times, valid and invalid in turn."""
    def version(i: int) -> dict:
        return {"gateway": {"debug_headers": True, "hosts": [f"v{i}.example"]},
                "services": {"gh": {"url": upstream_json.url}},
                "routes": {"github-mcp": {"service": "gh", "paths": ["/github-mcp"]}}}

    # Written by atomic replace, 8 versions a second: no settle interval, or they would coalesce.
    gw = Gateway(workdir, version(0), intercept=False, name="reload", extra=["--set", "mcp_policy_settle=0"])
    try:
        results: list[tuple[int, str]] = []

        async def client_loop(n: int) -> None:
            async with http_client(gw) as client:
                for _ in range(20):
                    r = await client.post(gw.url("/github-mcp"), json=jsonrpc("initialize", INIT), headers=MCP_HEADERS)
                    results.append((r.status_code, r.headers.get("x-mcp-gateway-policy", "")))
                    assert parse_mcp_body(r)[0]["result"]["serverInfo"]
                    await asyncio.sleep(0.01)

        async def rewriter() -> None:
            for i in range(1, 21):
                gw.write_policy(version(i) if i % 2 == 0 else "routes: [this is not a policy")
                await asyncio.sleep(0.12)

        await asyncio.gather(rewriter(), *(client_loop(n) for n in range(10)))
        await asyncio.sleep(0.6)
        log = gw.log()
        loaded = set(re.findall(r"policy version (\d+) loaded from .*?\(([0-9a-f]{12})\)", log))
        assert len(results) == 200 and all(status == 200 for status, _ in results)
        assert {tuple(v.split("-")) for _, v in results} <= loaded  # each request saw one complete version
        assert "policy reload rejected" in log
        async with http_client(gw) as client:
            r = await client.post(gw.url("/github-mcp"), json=jsonrpc("initialize", INIT),
                                  headers={**MCP_HEADERS, "Host": "v20.example"})
            assert r.status_code == 200  # the last valid version (hosts: [v20.example]) is active
    finally:
        gw.stop()


@pytest.mark.parametrize("policy, expected", [
    (None, "policy file not found"),
    ("services: {a: {url: 'ftp://x'}}\nroutes: {r: {service: a, paths: [/x]}}\n", "services.a.url (line 1)"),
    ("services: {a: {url: 'http://x'}}\nroutes: {r: {service: a, paths: [/x], bogus: 1}}\n", "routes.r.bogus"),
])
def test_startup_without_a_valid_policy_exits_nonzero(tmp_path, policy, expected):
    path = tmp_path / "policy.yaml"
    if policy is not None:
        path.write_text(policy)
    gw = Gateway(tmp_path, path, intercept=False, wait=False)
    try:
        gw.process.proc.wait(30)
    finally:
        gw.stop()
    assert gw.process.proc.returncode != 0
    assert expected in gw.log() and str(path) in gw.log()


def test_gateway_refuses_all_traffic_when_its_code_cannot_load(tmp_path):
    """mitmproxy would proxy without the addon if the script failed to import; ours refuses instead."""
    from tests.support.gateway import ENTRY

    lonely = tmp_path / "addons"
    lonely.mkdir()
    (lonely / "mcp_gateway.py").write_text(ENTRY.read_text())  # no mcpgw package beside it
    (tmp_path / "p.yaml").write_text("services: {a: {url: 'http://127.0.0.1:9'}}\nroutes: {r: {service: a, paths: [/x]}}\n")
    gw = Gateway(tmp_path, tmp_path / "p.yaml", intercept=False, wait=False, entry=lonely / "mcp_gateway.py")
    try:
        gw.process.proc.wait(30)
    finally:
        gw.stop()
    assert gw.process.proc.returncode != 0 and "MCP gateway failed to load" in gw.log()


async def test_script_reload_keeps_the_gateway_governing(tmp_path, upstream_json):
    """mitmproxy re-imports a changed -s script (the entry drops the package so edits apply); the
    reloaded gateway must keep routing, watching the policy and refusing what it should."""
    import os
    import shutil

    from tests.support.gateway import ROOT

    shutil.copytree(ROOT / "addons", tmp_path / "addons", ignore=shutil.ignore_patterns("__pycache__"))
    entry = tmp_path / "addons" / "mcp_gateway.py"

    def policy(path: str) -> dict:
        return {"services": {"gh": {"url": upstream_json.url}}, "routes": {"r": {"service": "gh", "paths": [path]}}}

    gw = Gateway(tmp_path, policy("/one"), intercept=False, entry=entry)
    try:
        async with http_client(gw) as client:
            async def status(path: str) -> int:
                r = await client.post(gw.url(path), json=jsonrpc("initialize", INIT), headers=MCP_HEADERS)
                return r.status_code

            assert await status("/one") == 200
            for n in (2, 3):  # a second reload must be picked up too
                stamp = time.time() + n
                os.utime(entry, (stamp, stamp))
                gw.process.wait_for(r"Loading script", count=n)
                gw.process.wait_for(r"policy version \d+ loaded", count=n)
                assert await status("/one") == 200 and await status("/nope") == 404
            gw.write_policy(policy("/two"))
            gw.process.wait_for(r"policy version \d+ loaded", count=4)
            assert await status("/two") == 200 and await status("/one") == 404
    finally:
        gw.stop()
