"""Tool governance end to end: the seed recipe's ACL matrix through a real mitmdump, against the
demo upstream, with the official MCP client (JSON answers, SSE answers, a paginated upstream,
the legacy HTTP+SSE transport, intercept mode), ambiguous requests sent raw, shadow mode, the
HTTP 403 answer and what mitmweb shows."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from mcp import McpError, types
from mitmproxy import flowfilter, io

from scripts.demo_github_tools import READ_TOOLS, TOOL_NAMES, WRITE_TOOLS
from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, http_client, jsonrpc, mcp_session, parse_mcp_body

pytestmark = pytest.mark.e2e

DEV = {"apikey": "dev-api-key"}
ADMIN = {"apikey": "admin-api-key"}
READ_IN_CATALOG_ORDER = [t for t in TOOL_NAMES if t in READ_TOOLS]  # the six, in the upstream's order
UNLISTED = ["list_commits", "delete_repository", "no_such_tool"]  # default_acl denies developers
CALL_TIMEOUT = timedelta(seconds=15)  # a denial that never arrives fails the test instead of hanging it

# The recipe's ai-mcp-proxy config (seeds/003, "ACL matrix"), as a route's acl.
RECIPE_ACL = {
    "consumer_identifier": "username",
    "include_consumer_groups": True,
    "default_acl": [{"deny": ["developer"], "scope": "tools"}],
    "tools": [*({"name": t, "acl": {"allow": ["admin", "developer"]}} for t in READ_TOOLS),
              *({"name": t, "acl": {"allow": ["admin"]}} for t in WRITE_TOOLS)],
}
KEY_AUTH = {"key_names": ["apikey"], "hide_credentials": True}
TRANSPORTS = {  # route -> (client path, legacy transport)
    "github-mcp": ("/github-mcp", False),  # SSE answers
    "github-json": ("/github-json", False),  # JSON answers
    "github-paged": ("/github-paged", False),  # pages of 7 tools
    "github-legacy": ("/github-legacy/sse", True),  # HTTP+SSE, paginated too
}


def denial(tool: str) -> str:
    return f"Tool '{tool}' is not available for consumer group 'developer'"


def policy(up: DemoUpstream, up_json: DemoUpstream, up_paged: DemoUpstream) -> dict:
    def route(service: str, path: str, **acl) -> dict:
        return {"service": service, "paths": [path], "key_auth": KEY_AUTH, "acl": {**RECIPE_ACL, **acl}}

    return {
        "consumer_groups": ["admin", "developer"],
        "consumers": {"admin-user": {"groups": ["admin"], "keys": ["admin-api-key"]},
                      "dev-user": {"groups": ["developer"], "keys": ["dev-api-key"]}},
        "services": {"gh": {"url": up.url}, "gh-json": {"url": up_json.url}, "gh-paged": {"url": up_paged.url},
                     "gh-paged-root": {"url": up_paged.base}},
        "routes": {
            "github-mcp": route("gh", "/github-mcp"),
            "github-json": route("gh-json", "/github-json"),
            "github-paged": route("gh-paged", "/github-paged"),
            "github-legacy": route("gh-paged-root", "/github-legacy"),
            "github-shadow": route("gh", "/github-shadow", shadow=True),
            "github-403": route("gh", "/github-403", deny_response="http403"),
        },
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("governance")


@pytest.fixture(scope="module")
def upstreams(workdir):
    started = {}
    try:
        started["sse"] = DemoUpstream(workdir, name="up-sse")
        started["json"] = DemoUpstream(workdir, "--json-response", name="up-json")
        started["paged"] = DemoUpstream(workdir, "--page-size", "7", name="up-paged")
        yield started
    finally:
        for up in started.values():
            up.stop()


@pytest.fixture(scope="module")
def gateway(workdir, upstreams):
    gw = Gateway(workdir, policy(upstreams["sse"], upstreams["json"], upstreams["paged"]))
    yield gw
    gw.stop()


def upstream_of(route: str, upstreams) -> DemoUpstream:
    return {"github-json": upstreams["json"], "github-paged": upstreams["paged"],
            "github-legacy": upstreams["paged"]}.get(route, upstreams["sse"])


async def all_tools(session) -> list[str]:
    """Every page of tools/list; filtered pages may be short or empty."""
    names, cursor = [], None
    while True:
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        names += [t.name for t in page.tools]
        cursor = page.nextCursor
        if not cursor:
            return names


def session_for(gateway: Gateway, route: str, headers: dict[str, str]):
    path, legacy = TRANSPORTS.get(route, (f"/{route}", False))
    return mcp_session(gateway.url(path), headers=headers, legacy=legacy)


# --- the ACL matrix ---------------------------------------------------------------------------

@pytest.mark.parametrize("route", list(TRANSPORTS))
async def test_developer_lists_exactly_the_read_tools(gateway, route):
    async with session_for(gateway, route, DEV) as session:
        assert await all_tools(session) == READ_IN_CATALOG_ORDER


@pytest.mark.parametrize("route", list(TRANSPORTS))
async def test_admin_lists_every_tool(gateway, route):
    async with session_for(gateway, route, ADMIN) as session:
        assert await all_tools(session) == TOOL_NAMES


@pytest.mark.parametrize("route", list(TRANSPORTS))
async def test_developer_calls(gateway, upstreams, route):
    upstream = upstream_of(route, upstreams)
    upstream.reset()
    async with session_for(gateway, route, DEV) as session:
        result = await session.call_tool("search_repositories", {"query": "kong gateway language:go"},
                                         read_timeout_seconds=CALL_TIMEOUT)
        assert not result.isError and "kong" in result.content[0].text
        for tool in [*WRITE_TOOLS, *UNLISTED]:
            with pytest.raises(McpError) as refused:
                await session.call_tool(tool, {}, read_timeout_seconds=CALL_TIMEOUT)
            assert (refused.value.error.code, refused.value.error.message) == (-32602, denial(tool))
    assert upstream.tool_calls() == ["search_repositories"]


async def test_admin_calls_a_write_tool(gateway, upstreams):
    upstreams["sse"].reset()
    async with session_for(gateway, "github-mcp", ADMIN) as session:
        result = await session.call_tool("create_issue", {"owner": "o", "repo": "r", "title": "t"},
                                         read_timeout_seconds=CALL_TIMEOUT)
        assert not result.isError
    assert upstreams["sse"].tool_calls() == ["create_issue"]


async def test_intercept_mode_is_governed_the_same(gateway, upstreams):
    up = upstreams["sse"]
    up.reset()
    async with mcp_session(up.url, headers=DEV, gateway=gateway, intercept=True) as session:
        assert await all_tools(session) == READ_IN_CATALOG_ORDER
        with pytest.raises(McpError) as refused:
            await session.call_tool("push_files", {}, read_timeout_seconds=CALL_TIMEOUT)
        assert refused.value.error.message == denial("push_files")
    assert "push_files" not in up.tool_calls()


# --- ambiguous and malformed requests, sent raw as the developer --------------------------------

def body(obj) -> bytes:
    return json.dumps(obj).encode()


PUSH = jsonrpc("tools/call", {"name": "push_files", "arguments": {}}, id=1)
AMBIGUOUS = {  # case -> (body, extra headers, expected status, expected JSON-RPC error code)
    "duplicate-name": (b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
                       b'"params":{"name":"search_code","name":"push_files"}}', {}, 400, -32700),
    "duplicate-nested": (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"push_files",'
                         b'"arguments":{"a":1,"a":2}}}', {}, 400, -32700),
    "invalid-utf8": (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"push_files\xc0"}}', {}, 400, -32700),
    "byte-order-mark": (b"\xef\xbb\xbf" + body(PUSH), {}, 400, -32700),
    "nan": (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"push_files","arguments":{"x":NaN}}}',
            {}, 400, -32700),
    "notification": (body(jsonrpc("tools/call", {"name": "push_files"}, id=None)), {}, 400, -32600),
    "name-array": (body(jsonrpc("tools/call", {"name": ["push_files"]})), {}, 400, -32602),
    "name-object": (body(jsonrpc("tools/call", {"name": {"value": "push_files"}})), {}, 400, -32602),
    "name-missing": (body(jsonrpc("tools/call", {"arguments": {"name": "push_files"}})), {}, 400, -32602),
    "params-array": (body(jsonrpc("tools/call", ["push_files"])), {}, 400, -32602),
    "method-case": (body(jsonrpc("Tools/Call", {"name": "push_files"})), {}, 400, -32600),
    "method-space": (body(jsonrpc("tools/call ", {"name": "push_files"})), {}, 400, -32600),
    "method-fullwidth": (body(jsonrpc("tools\uff0fcall", {"name": "push_files"})), {}, 400, -32600),
    "mcp-name-mismatch": (body(PUSH), {"Mcp-Method": "tools/call", "Mcp-Name": "search_code"}, 400, -32020),
    "mcp-method-mismatch": (body(jsonrpc("tools/call", {"name": "search_code"})), {"Mcp-Method": "tools/list"},
                            400, -32020),
    "text-plain": (body(PUSH), {"Content-Type": "text/plain"}, 415, None),
    "form": (b"name=push_files", {"Content-Type": "application/x-www-form-urlencoded"}, 415, None),
    "gzip": (body(PUSH), {"Content-Encoding": "gzip"}, 415, None),
    "oversized": (body(jsonrpc("tools/call", {"name": "search_code", "arguments": {"q": "x" * (1 << 20)}})),
                  {}, 413, None),
    "empty-batch": (b"[]", {}, 400, -32600),
}


@pytest.mark.parametrize("case", list(AMBIGUOUS))
async def test_ambiguous_request_is_refused_and_never_forwarded(gateway, upstreams, case):
    raw, headers, status, code = AMBIGUOUS[case]
    upstream = upstreams["sse"]
    upstream.reset()
    async with http_client() as client:
        r = await client.post(gateway.url("/github-mcp"), content=raw, headers={**MCP_HEADERS, **DEV, **headers})
    assert r.status_code == status, r.text
    if code is not None:
        [error] = parse_mcp_body(r)
        assert error["error"]["code"] == code
    assert upstream.requests() == []


async def test_batch_with_a_denied_call_is_refused_whole(gateway, upstreams):
    upstreams["sse"].reset()
    batch = [jsonrpc("tools/call", {"name": "search_code", "arguments": {"query": "x"}}, id=1),
             jsonrpc("tools/call", {"name": "push_files", "arguments": {}}, id=2)]
    async with http_client() as client:
        r = await client.post(gateway.url("/github-mcp"), json=batch, headers={**MCP_HEADERS, **DEV})
    assert r.status_code == 200
    answers = r.json()
    assert [a["id"] for a in answers] == [1, 2]
    assert answers[0]["error"]["code"] == -32600
    assert answers[1]["error"] == {"code": -32602, "message": denial("push_files")}
    assert upstreams["sse"].requests() == []


async def test_denial_as_sse_for_a_client_that_only_accepts_sse(gateway):
    async with http_client() as client:
        r = await client.post(gateway.url("/github-mcp"), json=PUSH,
                              headers={**MCP_HEADERS, **DEV, "Accept": "text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert parse_mcp_body(r) == [{"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": denial("push_files")}}]


async def test_gateway_keeps_serving_after_ambiguous_requests(gateway):
    async with session_for(gateway, "github-mcp", DEV) as session:
        result = await session.call_tool("search_code", {"query": "acl"}, read_timeout_seconds=CALL_TIMEOUT)
        assert not result.isError


# --- other answers and modes --------------------------------------------------------------------

async def test_http403_deny_response(gateway, upstreams):
    upstreams["sse"].reset()
    async with http_client() as client:
        r = await client.post(gateway.url("/github-403"), json=PUSH, headers={**MCP_HEADERS, **DEV})
    assert r.status_code == 403
    assert r.headers["www-authenticate"] == \
        f'Bearer error="insufficient_scope", error_description="{denial("push_files")}"'
    assert r.json()["error"]["message"] == denial("push_files")
    assert r.json()["error"]["data"] == {"error": "insufficient_scope", "error_description": denial("push_files")}
    assert upstreams["sse"].requests() == []


async def test_shadow_mode_forwards_denied_calls_and_full_lists(gateway, upstreams):
    upstreams["sse"].reset()
    async with session_for(gateway, "github-shadow", DEV) as session:
        assert await all_tools(session) == TOOL_NAMES
        result = await session.call_tool("push_files", {"owner": "o", "repo": "r", "branch": "main", "files": [],
                                                        "message": "m"}, read_timeout_seconds=CALL_TIMEOUT)
        assert not result.isError
    assert upstreams["sse"].tool_calls() == ["push_files"]


async def test_denied_flows_are_commented_and_marked_for_mitmweb(workdir, upstreams):
    flows_file = workdir / "flows.mitm"
    gw = Gateway(workdir, policy(upstreams["sse"], upstreams["json"], upstreams["paged"]), intercept=False,
                 name="gateway-saving", extra=["--save-stream-file", str(flows_file)])
    try:
        async with http_client() as client:
            url, headers = gw.url("/github-mcp"), {**MCP_HEADERS, **DEV}
            await client.post(url, json=PUSH, headers=headers)
            await client.post(url, json=jsonrpc("tools/call", {"name": ["push_files"]}), headers=headers)
        async with session_for(gw, "github-shadow", DEV) as session:
            await session.call_tool("create_issue", {"owner": "o", "repo": "r", "title": "t"},
                                    read_timeout_seconds=CALL_TIMEOUT)
    finally:
        gw.stop()
    with open(flows_file, "rb") as f:
        flows = list(io.FlowReader(f).stream())
    comments = [f.comment for f in flows if f.comment]
    assert "dev-user [developer] tools/call push_files: DENIED (acl)" in comments
    assert "dev-user [developer] tools/call: DENIED (malformed)" in comments
    assert "dev-user [developer] tools/call create_issue: WOULD_DENY (acl)" in comments
    denied = [f for f in flows if flowfilter.match("~comment DENIED", f)]
    assert len(denied) == 2 and all(flowfilter.match("~marker no_entry", f) for f in denied)
    # the client re-lists the tools after the call (to validate its result): shadow lists everything
    hidden = len(TOOL_NAMES) - len(READ_TOOLS)
    assert f"dev-user [developer] tools/list: {len(TOOL_NAMES)} shown, {hidden} WOULD_DENY (shadow)" in comments
    assert {f.marked for f in flows if flowfilter.match("~comment WOULD_DENY", f)} == {":warning:"}


# --- revision 2026-07-28: methods it removed ----------------------------------------------------

REV_2026 = {"MCP-Protocol-Version": "2026-07-28"}
META = {"_meta": {"io.modelcontextprotocol/clientInfo": {"name": "conformance", "version": "0.2.0"}}}


@pytest.mark.parametrize("method, params", [
    ("resources/subscribe", META),  # was 400/-32602 "params.uri must be a string"
    ("tasks/result", {"taskId": "no-such-task", **META}),  # was 200/-32602, the unknown task's denial
    ("ping", META),
])
async def test_a_method_removed_in_the_request_revision_is_404_method_not_found(gateway, upstreams, method, params):
    """The conformance suite's checks (sep-2575 removed methods, sep-2663 tasks/result): 404 and
    -32601 before the params are judged; nothing reaches the upstream."""
    upstreams["sse"].reset()
    async with http_client() as client:
        r = await client.post(gateway.url("/github-mcp"), json=jsonrpc(method, params, id=5),
                              headers={**MCP_HEADERS, **DEV, **REV_2026})
    assert r.status_code == 404, r.text
    [error] = parse_mcp_body(r)
    assert error["id"] == 5 and error["error"]["code"] == -32601
    assert upstreams["sse"].requests() == []


async def test_a_client_of_an_older_revision_still_subscribes_and_calls(gateway, upstreams):
    """The legitimate client: the same methods under its own revision are governed as before."""
    async with session_for(gateway, "github-mcp", DEV) as session:
        assert (await session.send_ping()) is not None
        result = await session.call_tool("search_repositories", {"query": "kong"}, read_timeout_seconds=CALL_TIMEOUT)
        assert not result.isError
    async with http_client() as client:
        r = await client.post(gateway.url("/github-mcp"), json=jsonrpc("resources/subscribe", META, id=6),
                              headers={**MCP_HEADERS, **DEV, "MCP-Protocol-Version": "2025-11-25"})
    assert r.status_code == 400 and parse_mcp_body(r)[0]["error"]["code"] == -32602  # a subscribe without a uri
