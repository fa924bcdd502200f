"""The governance request phase: decisions, refusals, their formats, and the fail-closed list."""

import json

import pytest

from mcpgw.governance import ledger
from mcpgw.governance.filtering import ResponseGovernor
from mcpgw.identity.consumers import Identity

from .governance_flows import (ADMIN, DEV, LEGACY, RECIPE_ACL, STREAMABLE, body, call, request, rpc, snapshot)

SNAP = snapshot(RECIPE_ACL)
DENIAL = "Tool 'push_files' is not available for consumer group 'developer'"


def governors(ctx):
    return [t for t in ctx.server_transforms if isinstance(t, ResponseGovernor)]


def test_allowed_call_is_forwarded_untouched_and_recorded():
    ctx, flow, answer = request(SNAP, call("search_repositories", arguments={"query": "kong"}))
    assert answer is None
    assert [(d.allowed, d.method, d.primitive, d.name, d.rule, d.reason, d.message_id, d.shadow) for d in ctx.decisions] \
        == [(True, "tools/call", "tool", "search_repositories", "acl.tools[search_repositories].allow", "acl", 1, False)]
    assert flow.comment == "dev-user [developer] tools/call search_repositories: allowed (acl)"
    assert not flow.marked
    # Every answer on a governed route passes the governor: the upstream, not the request, decides
    # which stream carries a list answer.
    assert len(governors(ctx)) == 1 and not governors(ctx)[0].expected


def test_denied_call_is_answered_by_the_gateway():
    ctx, flow, answer = request(SNAP, call("push_files", id="abc"))
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert body(answer) == {"jsonrpc": "2.0", "id": "abc", "error": {"code": -32602, "message": DENIAL}}
    d = ctx.decisions[0]
    assert (d.allowed, d.name, d.rule, d.shadow) == (False, "push_files", "acl.tools[push_files].allow", False)
    assert flow.comment == "dev-user [developer] tools/call push_files: DENIED (acl)"
    assert flow.marked == ":no_entry:"


def test_unlisted_tool_falls_under_default_acl():
    ctx, _, answer = request(SNAP, call("delete_repository"))
    assert body(answer)["error"]["message"] == "Tool 'delete_repository' is not available for consumer group 'developer'"
    assert ctx.decisions[0].rule == "acl.default_acl[0].deny"
    assert request(SNAP, call("delete_repository"), ADMIN)[2] is None


def test_denial_comes_as_sse_when_the_client_only_accepts_sse():
    _, _, answer = request(SNAP, call("push_files", id=7), headers={**STREAMABLE, "Accept": "text/event-stream"})
    assert answer.headers["content-type"] == "text/event-stream"
    assert body(answer) == [{"jsonrpc": "2.0", "id": 7, "error": {"code": -32602, "message": DENIAL}}]


def test_http403_deny_response():
    snap = snapshot({**RECIPE_ACL, "deny_response": "http403"})
    _, _, answer = request(snap, call("push_files"))
    assert answer.status_code == 403
    # the reason where clients that treat the 403 as a scope upgrade still show it
    assert answer.headers["www-authenticate"] == f'Bearer error="insufficient_scope", error_description="{DENIAL}"'
    assert body(answer)["error"] == {"code": -32602, "message": DENIAL, "data": {
        "error": "insufficient_scope", "error_description": DENIAL}}


@pytest.mark.parametrize("identity, audience", [
    (Identity("eason"), "consumer 'eason'"),
    (None, "anonymous consumers"),
    (Identity("multi", groups=("developer", "interns")), "consumer groups 'developer', 'interns'"),
])
def test_denial_names_the_consumer_when_groups_do_not_apply(identity, audience):
    _, _, answer = request(SNAP, call("push_files"), identity)
    assert body(answer)["error"]["message"] == f"Tool 'push_files' is not available for {audience}"


def test_prompts_resources_and_completions_are_decided_too():
    snap = snapshot({"include_consumer_groups": True,
                     "prompts": [{"name": "issue_triage", "acl": {"allow": ["admin"]}}],
                     "resources": [{"uri": "repo://octocat/*", "acl": {"allow": ["admin"]}}]})
    cases = [
        (rpc("prompts/get", {"name": "issue_triage"}), "Prompt 'issue_triage'"),
        (rpc("resources/read", {"uri": "repo://octocat/a/README.md"}), "Resource 'repo://octocat/a/README.md'"),
        (rpc("resources/subscribe", {"uri": "repo://octocat/a"}), "Resource 'repo://octocat/a'"),
        (rpc("completion/complete", {"ref": {"type": "ref/prompt", "name": "issue_triage"},
                                     "argument": {"name": "owner", "value": "o"}}), "Prompt 'issue_triage'"),
        (rpc("completion/complete", {"ref": {"type": "ref/resource", "uri": "repo://octocat/{path}"},
                                     "argument": {"name": "path", "value": "R"}}), "Resource 'repo://octocat/{path}'"),
    ]
    for message, noun in cases:
        _, _, answer = request(snap, message)
        assert body(answer)["error"] == {"code": -32602, "message": f"{noun} is not available for consumer group 'developer'"}
        assert request(snap, message, ADMIN)[2] is None
    assert request(snap, rpc("resources/read", {"uri": "repo://elsewhere/x"}))[2] is None


def test_batch_with_a_denied_call_is_refused_whole():
    batch = [call("search_code", id=1), call("push_files", id=2), rpc("notifications/initialized", id=None),
             rpc("ping", id=3)]
    ctx, flow, answer = request(SNAP, batch)
    assert answer.status_code == 200
    assert body(answer) == [
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "Not forwarded: another message of this batch was refused"}},
        {"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": DENIAL}},
        {"jsonrpc": "2.0", "id": 3, "error": {"code": -32600, "message": "Not forwarded: another message of this batch was refused"}},
    ]
    assert [(d.name, d.allowed, d.reason) for d in ctx.decisions] == [("search_code", False, "batch refused"),
                                                                      ("push_files", False, "acl")]
    assert flow.marked == ":no_entry:"
    assert "search_code: DENIED (batch refused); dev-user [developer] tools/call push_files: DENIED (acl)" in flow.comment


def test_batch_of_allowed_calls_goes_through():
    ctx, _, answer = request(SNAP, [call("search_code", id=1), call("list_issues", id=2)])
    assert answer is None and all(d.allowed for d in ctx.decisions)


# --- fail closed on ambiguous input ---------------------------------------------------------

@pytest.mark.parametrize("raw, code, fragment", [
    (rpc("tools/call", {"name": "push_files"}, id=None), -32600, "must be a request with an id"),
    (call(["push_files"]), -32602, "params.name must be a string"),
    (call(None), -32602, "params.name must be a string"),
    (call({"name": "push_files"}), -32602, "params.name must be a string"),
    (rpc("tools/call", {"arguments": {}}), -32602, "params.name must be a string"),
    (rpc("tools/call", ["push_files"]), -32602, "params must be an object"),
    (rpc("tools/call"), -32602, "params must be an object"),
    (rpc("Tools/Call", {"name": "push_files"}), -32600, "method name must be exactly"),
    (rpc("tools/call ", {"name": "push_files"}), -32600, "method name must be exactly"),
    (rpc("tools\uff0fcall", {"name": "push_files"}), -32600, "method name must be exactly"),
    (rpc("resources/read", {"uri": 5}), -32602, "params.uri must be a string"),
    (rpc("tasks/result", {"taskId": 1}), -32602, "params.taskId must be a string"),
    (rpc("completion/complete", {"ref": {"type": "ref/tool", "name": "x"}}), -32602, "ref/prompt or ref/resource"),
])
def test_ambiguous_messages_are_refused(raw, code, fragment):
    ctx, flow, answer = request(SNAP, raw)
    assert answer.status_code == 400
    error = body(answer)
    assert error["error"]["code"] == code and fragment in error["error"]["message"]
    assert error["id"] == raw.get("id")
    assert ctx.decisions[0].reason == "malformed" and not ctx.decisions[0].allowed
    assert "DENIED (malformed)" in flow.comment and flow.marked == ":no_entry:"


@pytest.mark.parametrize("raw, status", [
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_code","name":"push_files"}}', 400),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"push_files\xff"}}', 400),
    (b'[]', 400),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"push_files"}', 400),
])
def test_unparseable_bodies_never_reach_the_decision(raw, status):
    ctx, _, answer = request(SNAP, raw)
    assert answer.status_code == status and not ctx.decisions


def test_malformed_element_refuses_the_batch():
    ctx, _, answer = request(SNAP, [call("search_code", id=1), call(7, id=2)])
    assert answer.status_code == 400
    assert [e["id"] for e in body(answer)] == [1, 2]


def test_non_json_content_type_is_refused():
    _, _, answer = request(SNAP, call("search_code"), headers={**STREAMABLE, "Content-Type": "text/plain"})
    assert answer.status_code == 415


def test_route_body_limit():
    snap = snapshot({**RECIPE_ACL, "max_request_body_size": "200"})
    assert request(snap, call("search_code"))[2] is None
    _, _, answer = request(snap, call("search_code", arguments={"query": "x" * 300}))
    assert answer.status_code == 413


def test_body_on_other_methods_is_refused():
    _, _, answer = request(SNAP, call("push_files"), method="PUT")
    assert answer.status_code == 400


@pytest.mark.parametrize("headers, message, ok", [
    ({"Mcp-Method": "tools/call", "Mcp-Name": "push_files"}, call("push_files"), False),  # denied on the body
    ({"Mcp-Method": "tools/call", "Mcp-Name": "search_code"}, call("search_code"), True),
    ({"Mcp-Method": "tools/call", "Mcp-Name": "search_code"}, call("push_files"), "Mcp-Name"),
    ({"Mcp-Method": "tools/list"}, call("push_files"), "Mcp-Method"),
    ({"Mcp-Name": "search_code"}, rpc("tools/list", {}), "Mcp-Name"),
    ({"Mcp-Method": "tools/call"}, [call("search_code")], "batch"),
])
def test_routing_headers_must_match_the_body(headers, message, ok):
    ctx, flow, answer = request(SNAP, message, headers={**STREAMABLE, **headers})
    if ok is True:
        assert answer is None
    elif ok is False:
        assert body(answer)["error"]["code"] == -32602
    else:
        assert answer.status_code == 400
        error = body(answer)["error"]
        assert error["code"] == -32020 and ok in error["message"]
        assert flow.marked == ":no_entry:"


def test_repeated_routing_header_is_refused():
    headers = [*STREAMABLE.items(), ("Mcp-Method", "tools/call"), ("Mcp-Method", "tools/call")]
    _, _, answer = request(SNAP, call("search_code"), headers=headers)
    assert answer.status_code == 400 and body(answer)["error"]["code"] == -32020


def test_ungoverned_route_adds_nothing():
    ctx, flow, answer = request(snapshot(None), call("push_files"))
    assert answer is None and not ctx.decisions and not ctx.server_transforms and not flow.comment


# --- shadow mode ------------------------------------------------------------------------------

def test_shadow_mode_forwards_and_records_would_be_denials():
    snap = snapshot({**RECIPE_ACL, "shadow": True})
    ctx, flow, answer = request(snap, call("push_files"))
    assert answer is None
    d = ctx.decisions[0]
    assert not d.allowed and d.shadow
    assert flow.comment == "dev-user [developer] tools/call push_files: WOULD_DENY (acl)"
    assert flow.marked == ":warning:"
    assert json.loads(flow.request.content)["params"]["name"] == "push_files"


def test_shadow_mode_still_refuses_ambiguous_input():
    snap = snapshot({**RECIPE_ACL, "shadow": True})
    assert request(snap, call(["push_files"]))[2].status_code == 400


# --- legacy HTTP+SSE clients: the denial travels on the GET stream ----------------------------

def test_legacy_denial_is_delivered_through_a_stand_in_ping():
    ctx, flow, answer = request(SNAP, call("push_files", id=4), headers=LEGACY)
    assert answer is None  # forwarded, but not as the call
    sent = json.loads(flow.request.content)
    assert sent["method"] == "ping" and sent["id"].startswith(ledger.STAND_IN_PREFIX) and "params" not in sent
    assert flow.marked == ":no_entry:" and not ctx.decisions[0].allowed
    # The upstream answers the ping on the GET stream; the stream's governor turns it into the denial.
    get_ctx, _, _ = request(SNAP, None, method="GET", headers={})
    stream = governors(get_ctx)[0]
    assert stream({"jsonrpc": "2.0", "id": sent["id"], "result": {}}) == \
        {"jsonrpc": "2.0", "id": 4, "error": {"code": -32602, "message": DENIAL}}
    stray = {"jsonrpc": "2.0", "id": sent["id"], "result": {}}
    assert stream(stray) is stray  # delivered once


def test_get_streams_get_a_governor_of_their_caller():
    ctx, _, answer = request(SNAP, None, method="GET", headers={"Mcp-Session-Id": "s1"})
    assert answer is None
    assert governors(ctx)[0].caller == ctx.caller == "key-auth:dev-user"


# --- task follow-ups --------------------------------------------------------------------------

def test_task_follow_ups_are_decided_like_the_call_that_created_the_task():
    ctx, _, answer = request(SNAP, call("search_code", id=9, task={"ttl": 60000}))
    assert answer is None
    governor = governors(ctx)[0]
    created = {"jsonrpc": "2.0", "id": 9, "result": {"task": {"taskId": "t-1", "status": "working"}}}
    assert governor(created) is created
    assert request(SNAP, rpc("tasks/result", {"taskId": "t-1"}))[2] is None
    # another consumer cannot use it, and an unknown task is refused
    _, _, answer = request(SNAP, rpc("tasks/result", {"taskId": "t-1"}), Identity("eason"))
    assert body(answer)["error"]["message"] == "Task 't-1' is not available for consumer 'eason'"
    ctx, _, answer = request(SNAP, rpc("tasks/get", {"taskId": "t-unknown"}))
    assert body(answer)["error"]["code"] == -32602 and ctx.decisions[0].reason == "unknown task"


def test_task_of_a_shadow_forwarded_denied_call_stays_denied():
    shadow = snapshot({**RECIPE_ACL, "shadow": True})
    ctx, _, _ = request(shadow, call("push_files", id=5, task={}))
    governors(ctx)[0]({"jsonrpc": "2.0", "id": 5, "result": {"task": {"taskId": "t-2", "status": "working"}}})
    ctx, flow, answer = request(shadow, rpc("tasks/result", {"taskId": "t-2"}))
    assert answer is None and ctx.decisions[0].shadow and "WOULD_DENY" in flow.comment
    _, _, answer = request(SNAP, rpc("tasks/cancel", {"taskId": "t-2"}))
    assert body(answer)["error"]["message"].startswith("Task 't-2' is not available")


def test_task_follow_up_is_re_decided_under_the_current_policy():
    ctx, _, _ = request(SNAP, call("search_users", id=1, task={}))
    governors(ctx)[0]({"jsonrpc": "2.0", "id": 1, "result": {"task": {"taskId": "t-3", "status": "working"}}})
    stricter = snapshot({**RECIPE_ACL, "tools": [{"name": "search_users", "acl": {"allow": ["admin"]}}]}, version=2)
    assert request(stricter, rpc("tasks/result", {"taskId": "t-3"}))[2].status_code == 200
    assert request(SNAP, rpc("tasks/result", {"taskId": "t-3"}))[2] is None


# -- methods the request's MCP revision removed ---------------------------------------------------

REV_2026 = {**STREAMABLE, "MCP-Protocol-Version": "2026-07-28"}
META = {"_meta": {"io.modelcontextprotocol/clientInfo": {"name": "conformance", "version": "1"}}}


@pytest.mark.parametrize("message", [
    rpc("resources/subscribe", META),  # no uri: enforcement would have said "params.uri must be a string"
    rpc("resources/subscribe", {"uri": "file:///secret"}),
    rpc("tasks/result", {"taskId": "t-unknown"}),  # enforcement would have denied an unknown task
    rpc("ping", META), rpc("initialize", META), rpc("logging/setLevel", {"level": "debug"}), rpc("tasks/list"),
], ids=lambda m: m["method"] + ("" if "params" not in m else "-" + ",".join(m["params"])))
def test_a_method_the_revision_removed_is_not_found_whatever_its_params(message):
    ctx, flow, answer = request(SNAP, message, headers=REV_2026)
    assert answer.status_code == 404
    assert body(answer) == {"jsonrpc": "2.0", "id": 1, "error": {
        "code": -32601, "message": f"Method not found: {message['method']} is removed in MCP revision 2026-07-28"}}
    assert [(d.allowed, d.method, d.reason) for d in ctx.decisions] == [(False, message["method"], "removed method")]
    assert not ctx.upstream_set and flow.marked


def test_the_same_methods_under_an_older_revision_are_governed_as_before():
    for headers in (STREAMABLE, {**STREAMABLE, "MCP-Protocol-Version": "2025-11-25"}):
        _, _, answer = request(SNAP, rpc("resources/subscribe", META), headers=headers)
        assert answer.status_code == 400 and body(answer)["error"]["code"] == -32602
        _, _, answer = request(SNAP, rpc("tasks/result", {"taskId": "t-unknown"}), headers=headers)
        assert answer.status_code == 200 and body(answer)["error"]["code"] == -32602
        assert request(SNAP, rpc("ping"), headers=headers)[2] is None


def test_methods_the_revision_keeps_are_decided_as_usual():
    assert request(SNAP, call("search_repositories"), headers=REV_2026)[2] is None
    assert body(request(SNAP, call("push_files"), headers=REV_2026)[2])["error"]["message"] == DENIAL
    _, _, answer = request(SNAP, rpc("tasks/get", {"taskId": "t-unknown"}), headers=REV_2026)  # the tasks extension's
    assert answer.status_code == 200 and body(answer)["error"]["code"] == -32602


def test_a_batch_naming_a_removed_method_is_refused_whole():
    batch = [call("search_repositories", id=1), rpc("resources/subscribe", META, id=2)]
    ctx, _, answer = request(SNAP, batch, headers=REV_2026)
    assert answer.status_code == 404 and [e["error"]["code"] for e in body(answer)] == [-32600, -32601]
    assert not ctx.upstream_set


def test_shadow_mode_leaves_removed_methods_to_the_upstream():
    shadow = snapshot({**RECIPE_ACL, "shadow": True})
    assert request(shadow, rpc("resources/subscribe", {"uri": "file:///x"}), headers=REV_2026)[2] is None
