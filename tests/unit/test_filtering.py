"""List results filtered by the response governor: JSON bodies, batches, SSE events, pagination."""

import gc
import json

from mitmproxy.test.tutils import tresp

from mcpgw.governance import ledger
from mcpgw.governance.filtering import ResponseGovernor, correlate_accepted
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


def accept(ctx, flow, status):
    """The upstream answered the POST with `status`: run the response-headers correlation phase."""
    flow.response = tresp(status_code=status)
    correlate_accepted(ctx, flow)


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


def test_resumed_get_stream_knows_the_task_call_of_its_session():
    call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "search_code", "task": {}}}
    post_ctx, post_flow, _ = request(SNAP, call)
    post_ctx.session_id = "sess-9"  # as sessions.check_session sets it for a session of this caller
    accept(post_ctx, post_flow, 200)
    get_ctx, get_flow, _ = request(SNAP, None, method="GET", headers={})
    get_ctx.session_id = "sess-9"
    [governor] = get_ctx.server_transforms
    governor({"jsonrpc": "2.0", "id": 4, "result": {"task": {"taskId": "t-9", "status": "working"}}})
    assert ledger.tasks.get(("gh", "key-auth:dev-user", "t-9")) == ledger.TaskOrigin("search_code", True)
    assert ledger.expected.get(("gh", "key-auth:dev-user", "sess-9", (int, 4))) is None  # consumed


def test_governor_does_not_keep_its_flow_alive():
    governor, flow = governor_for()
    del flow
    gc.collect()
    assert governor._flow() is None
    governor({"jsonrpc": "2.0", "id": 1, "result": {"tools": CATALOG}})  # still filters, just cannot comment


# --- correlation never exempts an answer (issue 11, item 2) -----------------------------------

def test_a_list_answer_is_filtered_whatever_request_its_id_names():
    # The upstream decides which stream carries which answer, and the ids are the client's: a
    # tools/list answer arriving for a ping, a prompts/list, a tools/call or a tasks/result is
    # filtered all the same.
    for method, params in (("ping", None), ("prompts/list", {}), ("tools/call", {"name": "search_code"}),
                           ("tasks/result", None)):
        if method == "tasks/result":
            ctx, _, answer = request(SNAP, rpc("tools/call", {"name": "search_code", "task": {}}, id=7))
            ctx.server_transforms[0]({"jsonrpc": "2.0", "id": 7, "result": {"task": {"taskId": "t-list"}}})
            params = {"taskId": "t-list"}
        ctx, _, answer = request(SNAP, rpc(method, params, id=7))
        assert answer is None, method
        [governor] = ctx.server_transforms
        assert listed(governor({"jsonrpc": "2.0", "id": 7, "result": {"tools": CATALOG}})) == READ_TOOLS, method


def test_every_list_array_of_one_result_is_filtered():
    snap = snapshot({**RECIPE_ACL, "prompts": [{"name": "issue_triage", "acl": {"allow": ["admin"]}}]})
    governor, _ = governor_for("ping", snap=snap)
    out = governor({"jsonrpc": "2.0", "id": 1, "result": {"tools": CATALOG, "prompts": [{"name": "issue_triage"}],
                                                          "resources": [{"uri": "repo://x"}]}})
    assert listed(out) == READ_TOOLS and out["result"]["prompts"] == [] and out["result"]["resources"] == [{"uri": "repo://x"}]


def test_a_list_member_that_is_not_an_array_shows_nothing():
    governor, _ = governor_for(identity=ADMIN)
    for odd in ({"push_files": tool("push_files")}, "push_files", None):
        assert governor({"jsonrpc": "2.0", "id": 1, "result": {"tools": odd}})["result"]["tools"] == []


def test_a_post_the_upstream_refused_leaves_no_expectation():
    call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "search_code", "task": {}}}
    post_ctx, post_flow, _ = request(SNAP, call)
    post_ctx.session_id = "sess-406"
    accept(post_ctx, post_flow, 406)
    assert ledger.expected.get(("gh", "key-auth:dev-user", "sess-406", (int, 4))) is None


def test_expectations_are_the_callers_own():
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "search_code", "task": {}}}
    post_ctx, post_flow, _ = request(SNAP, call)
    post_ctx.session_id = "sess-shared"
    accept(post_ctx, post_flow, 200)
    other_ctx, _, _ = request(SNAP, None, method="GET", headers={}, identity=ADMIN)
    other_ctx.session_id = "sess-shared"  # (session binding keeps this from happening; the ledger does not rely on it)
    other_ctx.server_transforms[0]({"jsonrpc": "2.0", "id": 5, "result": {"task": {"taskId": "t-other"}}})
    assert ledger.tasks.get(("gh", "key-auth:admin-user", "t-other")) is None
    assert ledger.expected.get(("gh", "key-auth:dev-user", "sess-shared", (int, 5))) is not None


def test_stand_ins_are_the_callers_own_and_dropped_when_the_upstream_refuses():
    legacy = {"Accept": "*/*", "Content-Type": "application/json"}
    ctx, flow, _ = request(SNAP, rpc("tools/call", {"name": "push_files"}, id=3), headers=legacy)
    token = json.loads(flow.request.content)["id"]
    other, _, _ = request(SNAP, None, method="GET", headers={}, identity=ADMIN)
    pong = {"jsonrpc": "2.0", "id": token, "result": {}}
    assert other.server_transforms[0](pong) is pong  # another caller's stream: not its denial to deliver
    accept(ctx, flow, 404)  # e.g. an unknown session_id: the ping was never processed
    own, _, _ = request(SNAP, None, method="GET", headers={})
    assert own.server_transforms[0](pong) is pong
    assert ledger.stand_ins.get(token) is None


# --- the raw-bytes screen: what passes unparsed -------------------------------------------------

def test_an_answer_without_a_list_passes_unparsed_and_every_list_spelling_is_parsed():
    from mcpgw.protocol import bytescreen
    from mcpgw.protocol.messages import still_needed

    if not bytescreen.AVAILABLE:
        return
    ctx, _, _ = request(SNAP, rpc("tools/call", {"name": "search_code", "arguments": {}}))
    [governor] = ctx.server_transforms
    result = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "the tools are fine"}]}}
    assert still_needed(json.dumps(result).encode(), [governor]) == []
    for body in (
        {"jsonrpc": "2.0", "id": 1, "result": {"tools": CATALOG}},  # a list answering a tools/call: filtered
        {"jsonrpc": "2.0", "id": 1, "result": {"prompts": []}},
        {"jsonrpc": "2.0", "id": 1, "result": {"resources": []}},
        {"jsonrpc": "2.0", "id": 1, "result": {"resourceTemplates": []}},
    ):
        raw = json.dumps(body).encode()
        assert still_needed(raw, [governor]) == [governor], body
    escaped = b'{"jsonrpc":"2.0","id":1,"result":{"\\u0074ools":' + json.dumps(CATALOG).encode() + b"}}"
    assert listed(json.loads(transform_json_body(escaped, [governor]))) == READ_TOOLS
    utf16 = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": CATALOG}}).encode("utf-16")
    assert still_needed(utf16, [governor]) == [governor]
    stand_in = json.dumps({"jsonrpc": "2.0", "id": ledger.STAND_IN_PREFIX + "x", "result": {}}).encode()
    assert still_needed(stand_in, [governor]) == [governor]


def test_an_answer_that_may_create_a_task_is_always_read():
    from mcpgw.protocol.messages import still_needed

    call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "search_code", "task": {}}}
    ctx, _, _ = request(SNAP, call)
    [governor] = ctx.server_transforms
    created = json.dumps({"jsonrpc": "2.0", "id": 4, "result": {"task": {"taskId": "t-raw", "status": "working"}}})
    assert still_needed(created.encode(), [governor]) == [governor]
    transform_json_body(created.encode(), [governor])
    assert ledger.tasks.get(("gh", "key-auth:dev-user", "t-raw")) == ledger.TaskOrigin("search_code", True)


# --- tasks/list: the caller's own tasks only --------------------------------------------------------

def created(identity=None, task_id="t-own", id=31):
    """A task-augmented tools/call of `identity`, answered with a created task."""
    call = {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "search_code", "task": {}}}
    kw = {} if identity is None else {"identity": identity}
    ctx, _, _ = request(SNAP, call, **kw)
    [governor] = ctx.server_transforms
    governor({"jsonrpc": "2.0", "id": id, "result": {"task": {"taskId": task_id, "status": "working"}}})


def test_tasks_list_shows_only_the_tasks_this_caller_created():
    created(task_id="t-mine")
    created(ADMIN, task_id="t-admin", id=32)  # another caller's
    listing = {"jsonrpc": "2.0", "id": 40, "result": {"tasks": [
        {"taskId": "t-mine", "status": "working"}, {"taskId": "t-admin", "status": "working"},
        {"taskId": "t-outside", "status": "completed"}, {"status": "working"}, "t-mine"], "nextCursor": "n"}}
    for method in ("tasks/list", "ping"):  # filtered by what it is, whatever it claims to answer
        governor, flow = governor_for(method, id=40)
        out = json.loads(transform_json_body(json.dumps(listing).encode(), [governor]))
        assert out["result"] == {"tasks": [{"taskId": "t-mine", "status": "working"}], "nextCursor": "n"}
        assert "tasks/list: 1 of 5 shown" in flow.comment
    governor, _ = governor_for("tasks/list", id=41)
    not_a_list = {"jsonrpc": "2.0", "id": 41, "result": {"tasks": {"taskId": "t-admin"}}}
    assert governor(not_a_list)["result"]["tasks"] == []
    own = {"jsonrpc": "2.0", "id": 42, "result": {"tasks": [{"taskId": "t-mine", "status": "working"}]}}
    assert governor(own) is own  # nothing hidden: the answer as it came
    escaped = b'{"jsonrpc":"2.0","id":43,"result":{"\\u0074asks":[{"taskId":"t-admin","status":"working"}]}}'
    assert json.loads(transform_json_body(escaped, [governor]))["result"]["tasks"] == []
