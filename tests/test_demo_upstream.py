"""The demo upstream (scripts/demo_upstream.py), driven by the official MCP client over real HTTP.

The end-to-end tests of the gateway rely on everything checked here, so a failure here means
"the test fixture is broken", not "the gateway is broken".
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource
from mcp import ClientSession, McpError
from mcp import types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from pydantic import AnyUrl

from tests.support.procs import REPO_ROOT, DemoUpstream, demo_upstream

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import demo_upstream as upstream_module  # noqa: E402

PUBLIC_URL = "https://gateway.example:8443"
AUTH_SERVER = "https://auth.example/"
ISSUE_7 = {"owner": "octocat", "repo": "hello-world", "issue_number": 7}


@pytest.fixture(scope="module")
def upstream() -> Iterator[DemoUpstream]:
    with demo_upstream("--record") as server:
        yield server


@pytest.fixture(scope="module")
def json_paged_upstream() -> Iterator[DemoUpstream]:
    # One process for two independent options: every process costs most of a second to start.
    with demo_upstream("--json-response", "--page-size", "10") as server:
        yield server


@pytest.fixture(scope="module")
def bearer_upstream() -> Iterator[DemoUpstream]:
    options = ["--require-bearer", "--record", "--public-url", PUBLIC_URL, "--auth-server", AUTH_SERVER]
    with demo_upstream(*options) as server:
        yield server


@asynccontextmanager
async def mcp_session(url: str, headers: dict[str, str] | None = None, **options: Any) -> AsyncIterator[ClientSession]:
    """An initialized Streamable HTTP client session; `options` go to ClientSession (callbacks)."""
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(10, read=60)) as http_client:
        async with streamable_http_client(url, http_client=http_client) as (read_stream, write_stream, _):
            async with ClientSession(read_stream, write_stream, **options) as session:
                await session.initialize()
                yield session


def text_of(result: types.CallToolResult) -> str:
    assert not result.isError, result.content
    assert isinstance(result.content[0], types.TextContent)
    return result.content[0].text


async def answer_sampling(_: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    question = params.messages[0].content
    assert isinstance(question, types.TextContent) and "octocat/hello-world#7" in question.text
    return types.CreateMessageResult(role="assistant", model="test-model",
                                     content=types.TextContent(type="text", text="the app crashes without a config"))


def answer_elicitation(confirm: bool | None):
    async def callback(_: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert "octocat/doomed" in params.message
        if confirm is None:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"confirm": confirm})

    return callback


# --- Streamable HTTP -------------------------------------------------------------------------------


async def test_initialize_and_list_tools(upstream: DemoUpstream) -> None:
    async with mcp_session(upstream.mcp_url) as session:
        listed = await session.list_tools()
    assert listed.nextCursor is None
    names = [tool.name for tool in listed.tools]
    assert len(names) >= 75 and len(set(names)) == len(names)
    assert names == upstream_module.TOOL_NAMES
    assert set(upstream_module.READ_TOOLS) | set(upstream_module.WRITE_TOOLS) <= set(names)
    assert {"summarize_issue", "delete_repository", "run_workflow"} <= set(names)
    for tool in listed.tools:
        assert tool.description and tool.inputSchema["type"] == "object"
    by_name = {tool.name: tool for tool in listed.tools}
    assert by_name["search_repositories"].inputSchema["required"] == ["query"]
    assert by_name["search_repositories"].annotations.readOnlyHint is True
    assert by_name["create_issue"].annotations.readOnlyHint is False


async def test_pagination_follows_next_cursor(json_paged_upstream: DemoUpstream) -> None:
    pages: list[list[str]] = []
    async with mcp_session(json_paged_upstream.mcp_url) as session:
        cursor = None
        while True:
            listed = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
            pages.append([tool.name for tool in listed.tools])
            if (cursor := listed.nextCursor) is None:
                break
        with pytest.raises(McpError, match="Invalid cursor"):
            await session.list_tools(params=types.PaginatedRequestParams(cursor="not-a-cursor"))
        # A tool on a later page still gets its arguments validated against its schema.
        invalid = await session.call_tool("get_job_logs", {"owner": "octocat"})
        assert invalid.isError and "validation" in invalid.content[0].text.lower()
    assert len(pages) == -(-len(upstream_module.TOOL_NAMES) // 10)
    assert all(len(page) == 10 for page in pages[:-1])
    assert [name for page in pages for name in page] == upstream_module.TOOL_NAMES


async def test_search_repositories_echoes_the_query(upstream: DemoUpstream) -> None:
    async with mcp_session(upstream.mcp_url) as session:
        result = await session.call_tool("search_repositories", {"query": "mcp gateway"})
        again = await session.call_tool("search_repositories", {"query": "mcp gateway"})
        unknown = await session.call_tool("no_such_tool", {})
    found = json.loads(text_of(result))
    assert found["query"] == "mcp gateway" and found["items"][0]["full_name"] == "octocat/mcp-gateway"
    assert text_of(again) == text_of(result)  # deterministic
    assert unknown.isError


async def test_sampling_round_trip(upstream: DemoUpstream) -> None:
    async with mcp_session(upstream.mcp_url, sampling_callback=answer_sampling) as session:
        result = await session.call_tool("summarize_issue", ISSUE_7)
    assert text_of(result) == "summary: the app crashes without a config"


@pytest.mark.parametrize(("confirm", "expected"), [(True, "deleted octocat/doomed"), (False, "cancelled"),
                                                    (None, "cancelled")])
async def test_elicitation_round_trip(upstream: DemoUpstream, confirm: bool | None, expected: str) -> None:
    async with mcp_session(upstream.mcp_url, elicitation_callback=answer_elicitation(confirm)) as session:
        result = await session.call_tool("delete_repository", {"owner": "octocat", "repo": "doomed"})
    assert text_of(result) == expected


async def test_progress_arrives_while_the_call_runs(upstream: DemoUpstream) -> None:
    received: list[tuple[float, float, str]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        received.append((time.time(), progress, message or ""))

    args = {"owner": "octocat", "repo": "hello-world", "workflow_id": "ci.yml", "steps": 4, "delay_ms": 150}
    async with mcp_session(upstream.mcp_url) as session:
        result = await session.call_tool("run_workflow", args, progress_callback=on_progress)
        completed = time.time()
    assert json.loads(text_of(result))["conclusion"] == "success"
    assert [progress for _, progress, _ in received] == [1, 2, 3, 4]
    for arrived, _, message in received:
        sent = float(re.search(r"at t=([\d.]+)", message).group(1))
        assert 0 <= arrived - sent < 1.0, message
        assert arrived < completed - 0.1, "progress was held back until the call completed"


async def test_resources_and_prompts(upstream: DemoUpstream) -> None:
    async with mcp_session(upstream.mcp_url) as session:
        resources = await session.list_resources()
        templates = await session.list_resource_templates()
        readme = await session.read_resource(AnyUrl("repo://octocat/hello-world/README.md"))
        source = await session.read_resource(AnyUrl("repo://octo-org/tools/contents/src/app.py"))
        with pytest.raises(McpError, match="not found"):
            await session.read_resource(AnyUrl("repo://octocat/hello-world/missing"))
        prompts = await session.list_prompts()
        prompt = await session.get_prompt("issue_triage", {"owner": "octocat", "repo": "hello-world",
                                                           "issue_number": "3"})
        with pytest.raises(McpError, match="Missing arguments"):
            await session.get_prompt("review_pull_request", {"owner": "octocat"})
    assert "repo://octocat/hello-world/README.md" in [str(resource.uri) for resource in resources.resources]
    assert templates.resourceTemplates[0].uriTemplate == "repo://{owner}/{repo}/contents/{path}"
    assert readme.contents[0].text.startswith("# hello-world")
    assert "src/app.py of octo-org/tools" in source.contents[0].text
    assert {"issue_triage", "review_pull_request"} <= {p.name for p in prompts.prompts}
    assert "#3 of octocat/hello-world" in prompt.messages[0].content.text


async def test_json_response_mode(json_paged_upstream: DemoUpstream) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": types.LATEST_PROTOCOL_VERSION, "capabilities": {},
                             "clientInfo": {"name": "raw", "version": "0"}}}
    async with httpx.AsyncClient() as http:
        response = await http.post(json_paged_upstream.mcp_url, json=initialize,
                                   headers={"Accept": "application/json, text/event-stream"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["mcp-session-id"] and response.json()["result"]["serverInfo"]["name"] == "github-mcp-server"
    async with mcp_session(json_paged_upstream.mcp_url) as session:
        result = await session.call_tool("list_issues", {"owner": "octocat", "repo": "hello-world"})
    assert json.loads(text_of(result))["repository"] == "octocat/hello-world"


async def test_resumption_with_last_event_id(upstream: DemoUpstream) -> None:
    """A broken tools/call stream is resumed with GET + Last-Event-ID without losing events."""
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": types.LATEST_PROTOCOL_VERSION}
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": types.LATEST_PROTOCOL_VERSION, "capabilities": {},
                             "clientInfo": {"name": "raw", "version": "0"}}}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "run_workflow", "_meta": {"progressToken": "resume-me"},
                       "arguments": {"owner": "o", "repo": "r", "workflow_id": "ci.yml", "steps": 4, "delay_ms": 150}}}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(upstream.mcp_url, json=initialize, headers=headers)
        headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post(upstream.mcp_url, json=initialized, headers=headers)).status_code == 202

        # (httpx_sse.aconnect_sse would replace the Accept header the server requires on a POST.)
        async with http.stream("POST", upstream.mcp_url, json=call, headers=headers) as response:
            async for event in EventSource(response).aiter_sse():
                if event.data and json.loads(event.data).get("method") == "notifications/progress":
                    last_event_id = event.id
                    break  # drop the connection after the first step

        later: list[dict[str, Any]] = []
        resume_headers = {**headers, "Last-Event-ID": last_event_id}
        async with http.stream("GET", upstream.mcp_url, headers=resume_headers) as response:
            async for event in EventSource(response).aiter_sse():
                if event.data:
                    later.append(json.loads(event.data))
                    if later[-1].get("id") == 2:
                        break
    assert [m["params"]["progress"] for m in later if m.get("method") == "notifications/progress"] == [2, 3, 4]
    assert json.loads(later[-1]["result"]["content"][0]["text"])["steps"] == 4


# --- legacy HTTP+SSE -------------------------------------------------------------------------------


async def test_legacy_sse_transport(upstream: DemoUpstream) -> None:
    async with sse_client(upstream.sse_url) as (read_stream, write_stream):
        async with ClientSession(read_stream, write_stream, sampling_callback=answer_sampling) as session:
            initialized = await session.initialize()
            listed = await session.list_tools()
            searched = await session.call_tool("search_users", {"query": "mona"})
            summary = await session.call_tool("summarize_issue", ISSUE_7)
    assert initialized.serverInfo.name == "github-mcp-server"
    assert [tool.name for tool in listed.tools] == upstream_module.TOOL_NAMES
    assert json.loads(text_of(searched))["items"][0]["login"] == "mona"
    assert text_of(summary).startswith("summary: ")


# --- HTTP: metadata, authorization, test endpoints ------------------------------------------------


def test_protected_resource_metadata(upstream: DemoUpstream, bearer_upstream: DemoUpstream) -> None:
    default = httpx.get(upstream.base_url + "/.well-known/oauth-protected-resource/mcp").json()
    assert default == {
        "resource": upstream.mcp_url, "authorization_servers": ["https://github.com/login/oauth"],
        "scopes_supported": ["repo", "gist", "notifications", "read:org", "read:user"],
        "bearer_methods_supported": ["header"], "resource_name": "GitHub MCP Server (demo)",
    }
    public = httpx.get(bearer_upstream.base_url + "/.well-known/oauth-protected-resource/mcp")
    assert public.status_code == 200  # metadata stays readable without a token
    assert public.json()["resource"] == PUBLIC_URL + "/mcp"
    assert public.json()["authorization_servers"] == [AUTH_SERVER]


async def test_require_bearer(bearer_upstream: DemoUpstream) -> None:
    httpx.post(bearer_upstream.base_url + "/_test/reset")
    for method, url in [("POST", bearer_upstream.mcp_url), ("GET", bearer_upstream.sse_url)]:
        refused = httpx.request(method, url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == (
            f'Bearer resource_metadata="{PUBLIC_URL}/.well-known/oauth-protected-resource/mcp"')
        assert refused.json()["error"] == "invalid_token"
    async with mcp_session(bearer_upstream.mcp_url, headers={"Authorization": "Bearer demo-token"}) as session:
        assert len((await session.list_tools()).tools) >= 75
    recorded = httpx.get(bearer_upstream.base_url + "/_test/requests").json()
    assert recorded[0]["rpc_method"] == "ping" and "authorization" not in recorded[0]["headers"]  # refused, yet seen
    assert recorded[2]["rpc_method"] == "initialize"
    assert recorded[2]["headers"]["authorization"] == "Bearer demo-token"


async def test_recorded_requests(upstream: DemoUpstream) -> None:
    httpx.post(upstream.base_url + "/_test/reset").raise_for_status()
    identity = {"apikey": "key-123", "X-Consumer-Username": "alice", "X-Consumer-Groups": "dev, ops",
                "Origin": "http://localhost:6274"}
    async with mcp_session(upstream.mcp_url, headers=identity) as session:
        await session.call_tool("get_me", {})
    recorded = httpx.get(upstream.base_url + "/_test/requests").json()

    initialize, *others = recorded
    assert (initialize["method"], initialize["path"], initialize["rpc_methods"]) == ("POST", "/mcp", ["initialize"])
    assert "mcp-session-id" not in initialize["headers"]
    session_id = others[0]["headers"]["mcp-session-id"]
    assert all(entry["headers"]["mcp-session-id"] == session_id for entry in others)
    call = next(entry for entry in recorded if entry["rpc_method"] == "tools/call")
    assert (call["tool"], call["tool_names"]) == ("get_me", ["get_me"])
    assert {key: call["headers"][key] for key in ("apikey", "x-consumer-username", "x-consumer-groups", "origin")} == {
        "apikey": "key-123", "x-consumer-username": "alice", "x-consumer-groups": "dev, ops",
        "origin": "http://localhost:6274"}
    assert call["headers"]["host"] == f"127.0.0.1:{upstream.port}"
    assert {"GET", "DELETE"} <= {entry["method"] for entry in recorded}  # server stream, session end
    assert [entry["seq"] for entry in recorded] == sorted(entry["seq"] for entry in recorded)

    httpx.post(upstream.base_url + "/_test/reset").raise_for_status()
    assert httpx.get(upstream.base_url + "/_test/requests").json() == []


def test_test_endpoints_need_record_flag(json_paged_upstream: DemoUpstream) -> None:
    for path in ("/_test/requests", "/_test/echo", "/_test/big-sse?mb=1"):
        assert httpx.get(json_paged_upstream.base_url + path).status_code == 404


def test_big_sse_stream(upstream: DemoUpstream) -> None:
    size = events = 0
    with httpx.stream("GET", upstream.base_url + "/_test/big-sse?mb=3") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_bytes():
            size += len(chunk)
            events += chunk.count(b"\n\n")
    assert size == 3 * 1024 * 1024
    assert events == 3 * 16  # 64 KiB each
    with httpx.stream("GET", upstream.base_url + "/_test/big-sse?mb=0.001") as response:
        body = response.read()
    assert len(body) == 1048 and body.startswith(b"event: message\ndata: {") and body.endswith(b'"}}\n\n')
    message = json.loads(body.split(b"data: ", 1)[1])
    assert message["method"] == "notifications/message"


def test_redirect_and_echo(upstream: DemoUpstream) -> None:
    redirect = httpx.get(upstream.base_url + "/_test/redirect", params={"to": "http://elsewhere.example/x"})
    assert redirect.status_code == 302 and redirect.headers["location"] == "http://elsewhere.example/x"
    temporary = httpx.post(upstream.base_url + "/_test/redirect", params={"to": "/mcp", "status": "307"})
    assert temporary.status_code == 307
    sent = {"Authorization": "Bearer abc", "X-Thing": "1"}
    echoed = httpx.get(upstream.base_url + "/_test/echo", headers=sent).json()
    assert echoed["authorization"] == "Bearer abc" and echoed["x-thing"] == "1"


def test_paginate() -> None:
    """The paging used for tools, prompts and resources alike."""
    items = ["a", "b", "c", "d", "e"]
    pages, params = [], None
    while True:
        page, cursor = upstream_module.paginate("resources", items, params, 2)
        pages.append(page)
        if cursor is None:
            break
        params = types.PaginatedRequestParams(cursor=cursor)
    assert pages == [["a", "b"], ["c", "d"], ["e"]]
    assert upstream_module.paginate("resources", items, None, None) == (items, None)
    first_cursor = upstream_module.paginate("resources", items, None, 2)[1]
    with pytest.raises(McpError):  # a cursor is only valid for the kind of list it came from
        upstream_module.paginate("prompts", items, types.PaginatedRequestParams(cursor=first_cursor), 2)


def test_event_sizes_add_up() -> None:
    for total in (0, 1, 200, 64 * 1024, 64 * 1024 + 5, 5 * 1024 * 1024 + 123):
        sizes = list(upstream_module.filler_event_sizes(total))
        assert sizes and all(size <= 2 * 64 * 1024 for size in sizes)
        assert sum(sizes) == max(total, upstream_module.MIN_FILLER_EVENT_SIZE)
