"""List results filtered by the response governor: JSON bodies, batches, SSE events, pagination."""

import gc
import json

from mcpgw.governance import ledger
from mcpgw.governance.filtering import ResponseGovernor
from mcpgw.protocol.messages import SSEStream, message_event_transform, transform_json_body

from .governance_flows import ADMIN, READ_TOOLS, RECIPE_ACL, WRITE_TOOLS, request, rpc, snapshot, tool

SNAP = snapshot(RECIPE_ACL)
CATALOG = [tool(n) for n in [*READ_TOOLS, *WRITE_TOOLS, "list_commits", "delete_repository"]]


def governor_for(method="tools/list", identity=None, snap=SNAP, id=1, headers=None):
    """The governor a POST of `method` installs, and its flow."""
    kw = {} if identity is None else {"identity": identity}
    ctx, flow, answer = request(snap, rpc(method, {}, id=id), headers=headers, **kw)
    assert answer is None
    [governor] = [t for t in ctx.server_transforms if isinstance(t, ResponseGovernor)]
    return governor, flow


def relayed(sse: SSEStream, chunk: bytes) -> bytes:
    out = sse(chunk)
    return out if isinstance(out, bytes) else b"".join(out)


def listed(message):
    return [t["name"] for t in message["result"]["tools"]]


def test_tools_list_json_is_filtered_keeping_everything_else():
    governor, flow = governor_for()
    upstream = {"jsonrpc": "2.0", "id": 1,
                "result": {"_meta": {"x": 1}, "tools": CATALOG, "nextCursor": "abc", "extra": []}}
    raw = json.dumps(upstream).encode()
    out = json.loads(transform_json_body(raw, [governor]))
    assert listed(out) == READ_TOOLS
    assert list(out) == ["jsonrpc", "id", "result"]
    assert list(out["result"]) == ["_meta", "tools", "nextCursor", "extra"]
    assert out["result"]["nextCursor"] == "abc" and out["result"]["extra"] == [] and out["result"]["_meta"] == {"x": 1}
    assert out["result"]["tools"][0] == tool("search_repositories")  # entries themselves untouched
    assert flow.comment == "dev-user [developer] tools/list: 6 of 13 shown (acl)"


def test_page_filtered_to_nothing_stays_an_empty_array():
    governor, _ = governor_for()
    raw = json.dumps({"jsonrpc": "2.0", "id": 1,
                      "result": {"tools": [tool("push_files")], "nextCursor": "page3"}}).encode()
    out = transform_json_body(raw, [governor])
    assert b'"tools":[]' in out and b'"nextCursor":"page3"' in out


def test_nothing_hidden_means_the_body_is_left_as_sent():
    governor, flow = governor_for(identity=ADMIN)
    raw = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": CATALOG}}).encode()
    assert transform_json_body(raw, [governor]) is None  # unchanged: the original bytes go out
    assert flow.comment == "admin-user [admin] tools/list: 13 of 13 shown (acl)"


def test_entries_that_cannot_be_decided_are_dropped():
    governor, _ = governor_for(identity=ADMIN)
    msg = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [tool("a"), {"name": 5}, "b", {"title": "no name"}]}}
    assert listed(governor(msg)) == ["a"]


def test_batch_of_responses():
    ctx, _, _ = request(SNAP, [rpc("tools/list", {}, id=1), rpc("prompts/list", {}, id=2), rpc("ping", id=3)])
    [governor] = ctx.server_transforms
    batch = [{"jsonrpc": "2.0", "id": 1, "result": {"tools": CATALOG}},
             {"jsonrpc": "2.0", "id": 2, "result": {"prompts": [{"name": "issue_triage"}]}},
             {"jsonrpc": "2.0", "id": 3, "result": {}}]
    out = json.loads(transform_json_body(json.dumps(batch).encode(), [governor]))
    assert listed(out[0]) == READ_TOOLS
    assert out[1:] == batch[1:]  # prompts are not governed by this ACL: all shown


def test_other_messages_pass_unchanged():
    governor, _ = governor_for()
    for msg in ({"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "x"}},
                {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"},
                {"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {"tools": CATALOG}},
                {"jsonrpc": "2.0", "id": 1, "result": "not an object"}):
        assert governor(msg) is msg


def test_sse_events_on_the_post_stream():
    governor, _ = governor_for(id=2)
    progress = b'event: message\nid: 1\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\n\n'
    result = {"jsonrpc": "2.0", "id": 2, "result": {"tools": CATALOG, "nextCursor": "n"}}
    stream = progress + b"event: message\nid: 2\ndata: " + json.dumps(result).encode() + b"\n\n"
    sse = SSEStream([message_event_transform([governor])])
    out = b"".join(relayed(sse, stream[i:i + 7]) for i in range(0, len(stream), 7)) + relayed(sse, b"")
    assert out.startswith(progress)  # untouched events go out byte for byte
    rewritten = out[len(progress):].decode()
    assert "id: 2\n" in rewritten
    data = json.loads(next(line[5:] for line in rewritten.splitlines() if line.startswith("data:")))
    assert listed(data) == READ_TOOLS and data["result"]["nextCursor"] == "n"


def test_prompts_resources_and_templates():
    snap = snapshot({"include_consumer_groups": True,
                     "default_acl": [{"scope": "prompts", "allow": ["admin"]},
                                     {"scope": "resources", "deny": ["developer"]}],
                     "prompts": [{"name": "issue_triage", "acl": {"allow": ["developer"]}}],
                     "resources": [{"uri": "repo://octocat/*", "acl": {}}]})
    governor, _ = governor_for("prompts/list", snap=snap)
    out = governor({"jsonrpc": "2.0", "id": 1, "result": {"prompts": [{"name": "issue_triage"}, {"name": "review"}]}})
    assert out["result"]["prompts"] == [{"name": "issue_triage"}]
    governor, _ = governor_for("resources/list", snap=snap)
    out = governor({"jsonrpc": "2.0", "id": 1, "result": {"resources": [{"uri": "repo://octocat/a"}, {"uri": "file:///x"}]}})
    assert out["result"]["resources"] == [{"uri": "repo://octocat/a"}]
    governor, _ = governor_for("resources/templates/list", snap=snap)
    templates = [{"uriTemplate": "repo://octocat/{path}"}, {"uriTemplate": "repo://{owner}/{repo}"}]
    out = governor({"jsonrpc": "2.0", "id": 1, "result": {"resourceTemplates": templates}})
    assert out["result"]["resourceTemplates"] == templates[:1]


def test_shadow_mode_lists_everything_and_counts():
    governor, flow = governor_for(snap=snapshot({**RECIPE_ACL, "shadow": True}))
    msg = {"jsonrpc": "2.0", "id": 1, "result": {"tools": CATALOG}}
    assert governor(msg) is msg
    assert flow.comment == "dev-user [developer] tools/list: 13 shown, 7 WOULD_DENY (shadow)"
    assert flow.marked == ":warning:"


def test_get_stream_filters_by_shape():
    # Legacy HTTP+SSE: answers to POSTs arrive on the GET stream, where their ids mean nothing.
    ctx, flow, _ = request(SNAP, None, method="GET", headers={})
    [governor] = ctx.server_transforms
    out = governor({"jsonrpc": "2.0", "id": 17, "result": {"tools": CATALOG}})
    assert listed(out) == READ_TOOLS
    assert flow.comment == "dev-user [developer] tools/list: 6 of 13 shown (acl)"


def test_resumed_get_stream_knows_the_request_of_its_session():
    session = [("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json"),
               ("Mcp-Session-Id", "sess-9")]
    call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "search_code", "task": {}}}
    request(SNAP, call, headers=session)
    get_ctx, _, _ = request(SNAP, None, method="GET", headers={"Mcp-Session-Id": "sess-9"})
    [governor] = get_ctx.server_transforms
    governor({"jsonrpc": "2.0", "id": 4, "result": {"task": {"taskId": "t-9", "status": "working"}}})
    assert ledger.tasks.get(("gh", "dev-user", "t-9")) == ledger.TaskOrigin("search_code", True)
    assert ledger.expected.get(("gh", "sess-9", (int, 4))) is None  # consumed


def test_governor_does_not_keep_its_flow_alive():
    governor, flow = governor_for()
    del flow
    gc.collect()
    assert governor._flow() is None
    governor({"jsonrpc": "2.0", "id": 1, "result": {"tools": CATALOG}})  # still filters, just cannot comment
