"""The "MCP" content view (through mitmproxy's contentview API) and the mcp.policy / mcp.explain
commands (through mitmproxy's command machinery)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mitmproxy import contentviews, exceptions, http
from mitmproxy.test import taddons, tflow

from mcpgw.mitm_ui import MCPConsole
from mcpgw.policy.store import PolicyStore

RECORDED_TOOLS_LIST = (Path(__file__).parent / "data" / "tools_list_page.sse").read_bytes()  # demo upstream, page size 6
MCP_REQUEST = {"accept": "application/json, text/event-stream", "content-type": "application/json"}

RECIPE = {
    "consumer_groups": ["admin", "developer"],
    "consumers": {"admin-user": {"groups": ["admin"], "keys": ["admin-api-key"]},
                  "dev-user": {"id": "c-42", "groups": ["developer"], "keys": ["dev-api-key"]}},
    "services": {"github": {"url": "https://api.githubcopilot.com/mcp"}},
    "routes": {
        "github-mcp": {"service": "github", "paths": ["/github-mcp"], "key_auth": {"hide_credentials": True},
                       "acl": {"include_consumer_groups": True,
                               "default_acl": [{"scope": "tools", "deny": ["developer"]}],
                               "tools": [{"name": "search_repositories", "acl": {"allow": ["admin", "developer"]}},
                                         {"name": "push_files", "acl": {"allow": ["admin"]}}]}},
        "shadowed": {"service": "github", "paths": ["/shadow"],
                     "acl": {"include_consumer_groups": True, "shadow": True,
                             "default_acl": [{"scope": "tools", "deny": ["developer"]}]}},
        "open": {"service": "github", "paths": ["/open"]},
    },
}


@pytest.fixture
def store(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    s = PolicyStore()
    s.load(p)
    return s


@pytest.fixture
def tctx(store):
    with taddons.context(MCPConsole(store)) as tctx:  # loading the addon registers the view
        yield tctx


def flow_with(request: dict | list, body: bytes, content_type: str) -> http.HTTPFlow:
    flow = tflow.tflow(req=tflow.treq(method=b"POST", path=b"/github-mcp", content=json.dumps(request).encode()))
    flow.request.headers.update(MCP_REQUEST)
    flow.response = http.Response.make(200, body, {"content-type": content_type})
    return flow


def test_recorded_sse_tools_list_is_chosen_and_readable(tctx):
    flow = flow_with({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, RECORDED_TOOLS_LIST, "text/event-stream")
    result = contentviews.prettify_message(flow.response, flow)
    assert result.view_name == "MCP"
    lines = result.text.splitlines()
    assert lines[0] == "# [1] tools/list -> result · id 2 · event message · event id 2"
    assert lines[1].startswith("# 6 tools: get_me, get_teams, get_team_members")
    body = json.loads("\n".join(lines[2:]))
    assert body["result"]["nextCursor"] and len(body["result"]["tools"]) == 6


def test_sse_stream_shows_one_block_per_message_in_order(tctx):
    events = [
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 0.5}},
        {"jsonrpc": "2.0", "id": 0, "method": "sampling/createMessage", "params": {"messages": []}},
        {"jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message": "Tool 'push_files' is not available"}},
    ]
    body = b": keep-alive\n\nid: 7\ndata:\n\nevent: endpoint\ndata: /messages/?session_id=1\n\n" + b"".join(b"event: message\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events)
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "push_files"}}
    flow = flow_with(call, body, "text/event-stream")
    text = contentviews.prettify_message(flow.response, flow).text
    headlines = [line for line in text.splitlines() if line.startswith("# [")]
    assert headlines == [
        "# [1] SSE comment",
        "# [2] empty SSE event · event id 7",
        "# [3] SSE event, not JSON-RPC · event endpoint",
        "# [4] notifications/progress · notification · event message",
        "# [5] sampling/createMessage · id 0 · request · event message",
        "# [6] tools/call push_files -> error -32602 · id 3 · event message",
    ]
    assert "# /messages/?session_id=1" in text
    assert "# Tool 'push_files' is not available" in text


def test_json_request_and_batch_bodies(tctx):
    call = [{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search_code", "arguments": {}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    answer = [{"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": True}}]
    flow = flow_with(call, json.dumps(answer).encode(), "application/json")
    request_view = contentviews.prettify_message(flow.request, flow)
    assert request_view.view_name == "MCP"
    assert [ln for ln in request_view.text.splitlines() if ln.startswith("# [")] == [
        "# [1] tools/call search_code · id 1 · request", "# [2] notifications/initialized · notification"]
    response_view = contentviews.prettify_message(flow.response, flow)
    assert response_view.text.startswith("# [1] tools/call search_code -> result · id 1\n# the tool reported an error")


def test_other_bodies_keep_their_usual_view(tctx):
    flow = flow_with({"jsonrpc": "2.0", "id": 1, "method": "ping"}, b'{"resource": "https://x"}', "application/json")
    assert contentviews.prettify_message(flow.response, flow).view_name == "JSON"
    flow.response = http.Response.make(200, b"data: hello\n\n", {"content-type": "text/event-stream"})
    assert contentviews.prettify_message(flow.response, flow).view_name != "MCP"
    flow.response = http.Response.make(200, b"<html></html>", {"content-type": "text/html"})
    assert contentviews.prettify_message(flow.response, flow).view_name != "MCP"


def test_loading_twice_keeps_one_view(store):
    with taddons.context(MCPConsole(store)):
        count = len(contentviews.registry)
    with taddons.context(MCPConsole(store)):
        assert len(contentviews.registry) == count


def test_policy_command_summarizes_routes_rules_consumers_and_digest(tctx, store):
    text = tctx.command(tctx.master.addons.chain[-1].policy)
    assert store.current.digest in text
    assert "github-mcp: /github-mcp -> github (https://api.githubcopilot.com/mcp)" in text
    assert "default_acl[tools]: deny [developer]" in text
    assert "tools[push_files]: allow [admin]" in text
    assert "acl (shadow: denials are recorded, not enforced)" in text
    assert "consumer groups (2): admin, developer" in text
    assert "dev-user id=c-42: groups [developer], 1 key" in text
    assert "dev-api-key" not in text


def test_explain_command(tctx):
    console = tctx.master.addons.chain[-1]
    assert tctx.command(console.explain, "dev-user", "push_files", "github-mcp") == \
        "github-mcp: dev-user [developer] tools/call push_files -> DENIED by acl.tools[push_files].allow"
    assert tctx.command(console.explain, "c-42", "search_repositories", "github-mcp").endswith(
        "-> ALLOWED by acl.tools[search_repositories].allow")
    gated, shadowed, open_route = tctx.command(console.explain, "dev-user", "create_issue").splitlines()
    assert gated.startswith("github-mcp: dev-user [developer] tools/call create_issue -> DENIED by acl.default_acl")
    assert shadowed.startswith("shadowed: dev-user [developer] tools/call create_issue -> WOULD_DENY by acl.default_acl")
    assert shadowed.endswith("(shadow mode: forwarded anyway)")
    assert open_route == "open: dev-user [developer] tools/call create_issue -> ALLOWED (no acl)"
    assert "ALLOWED" in tctx.command(console.explain, "group:admin", "push_files", "github-mcp")
    with pytest.raises(exceptions.CommandError, match="unknown consumer 'nobody'"):
        tctx.command(console.explain, "nobody", "push_files")
    with pytest.raises(exceptions.CommandError, match="unknown route"):
        tctx.command(console.explain, "dev-user", "push_files", "nope")


# -- the URL shown for flows the gateway answers itself (gateway mode) -----------------------------

GATED = """
consumers: {dev-user: {keys: [dev-api-key]}}
services: {gh: {url: "http://127.0.0.1:18932/mcp"}}
routes: {github-mcp: {service: gh, paths: [/github-mcp], key_auth: {}}}
"""


@pytest.fixture
def gateway_addon(tmp_path):
    from mitmproxy.addons.proxyserver import Proxyserver

    from mcpgw.addon import MCPGateway

    path = tmp_path / "gated.yaml"
    path.write_text(GATED)
    addon = MCPGateway()
    with taddons.context(Proxyserver(), addon) as tctx:
        tctx.configure(addon, mcp_policy=str(path), keep_host_header=True)
        yield addon


async def answered(addon, path: str, headers: dict[str, str], host: str = "localhost:8443") -> http.HTTPFlow:
    """A flow on a reverse listener whose nominal target is the placeholder 127.0.0.1:9, through
    the hooks as mitmproxy calls them (the console, a child addon, after the gateway)."""
    from mitmproxy.proxy.mode_specs import ProxyMode

    f = tflow.tflow(resp=False)
    f.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9@8443")
    f.client_conn.timestamp_tls_setup = None
    f.client_conn.sockname = ("127.0.0.1", 8443)
    f.request.method, f.request.path, f.request.host, f.request.port = "POST", path, "127.0.0.1", 9
    f.request.headers.update({"Host": host, **MCP_REQUEST, **headers})
    f.request.content = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    await addon.requestheaders(f)
    await addon.request(f)
    if f.response is None:  # forwarded: the upstream answers
        f.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
    addon.responseheaders(f)  # the gateway's own, then its children's (the console's among them)
    return f


async def test_a_refused_flow_shows_the_gateway_url_the_client_used(gateway_addon):
    from mcpgw import context

    refused = await answered(gateway_addon, "/github-mcp", {})
    assert refused.response.status_code == 401
    assert (refused.request.scheme, refused.request.host, refused.request.port) == ("http", "localhost", 8443)
    assert refused.request.pretty_url == "http://localhost:8443/github-mcp"
    assert refused.request.headers["Host"] == "localhost:8443" and refused.request.path == "/github-mcp"
    assert context.get(refused).upstream_set is False  # nothing treats it as routed
    unrouted = await answered(gateway_addon, "/nowhere", {}, host="other.example")  # no route, no public host
    assert unrouted.response.status_code in (403, 404, 421)
    assert (unrouted.request.host, unrouted.request.port) == ("127.0.0.1", 8443)  # the listener's own address


async def test_a_forwarded_flow_keeps_its_upstream(gateway_addon):
    forwarded = await answered(gateway_addon, "/github-mcp", {"apikey": "dev-api-key"})
    assert forwarded.request.url == "http://127.0.0.1:18932/mcp"
