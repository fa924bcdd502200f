"""The response governor's pre-screen (ResponseGovernor.passes): an answer that cannot hold a list
result, a stand-in id or a task answer is not parsed; whatever could spell one, in any form a JSON
parser reads, still is, and is filtered."""

import json

import pytest

from mcpgw.governance import ledger
from mcpgw.protocol.messages import SSEStream, message_event_transform, transform_json_body

from .governance_flows import READ_TOOLS, RECIPE_ACL, WRITE_TOOLS, request, rpc, snapshot, tool
from .test_filtering import listed, relayed

SNAP = snapshot(RECIPE_ACL)
CATALOG = [tool(n) for n in [*READ_TOOLS, *WRITE_TOOLS]]
CALL_ANSWER = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "3 repositories"}]}}


@pytest.fixture(autouse=True)
def no_expected_tasks(monkeypatch):
    """Other tests leave task answers expected in the process-wide ledger; here there are none."""
    monkeypatch.setattr(ledger, "expected", ledger.BoundedMap(100))


def governor_for(method="tools/call"):
    """The governor an allowed `tools/call` (or a list request) installs."""
    params = {"name": "search_repositories", "arguments": {"query": "mcp"}} if method == "tools/call" else {}
    ctx, _, answer = request(SNAP, rpc(method, params, id=1))
    assert answer is None
    [governor] = ctx.server_transforms
    return governor, ctx


class Counting:
    """The governor, counting the messages it is handed (parsed for it)."""

    def __init__(self, governor):
        self.governor, self.seen = governor, 0
        self.passes = governor.passes

    def __call__(self, message):
        self.seen += 1
        return self.governor(message)


def test_a_call_answer_is_not_parsed():
    governor, _ = governor_for("tools/call")
    counting = Counting(governor)
    assert transform_json_body(json.dumps(CALL_ANSWER).encode(), [counting]) is None
    assert counting.seen == 0


def test_a_list_answer_to_a_call_is_still_filtered():
    governor, _ = governor_for("tools/call")
    raw = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": CATALOG}}).encode()
    assert not governor.passes(raw)
    assert listed(json.loads(transform_json_body(raw, [governor]))) == READ_TOOLS


@pytest.mark.parametrize("spelling", ['"\\u0074ools"', '"t\\u006fols"', '"tool\\u0073"'])
def test_a_list_member_spelt_with_escapes_is_parsed_and_filtered(spelling):
    governor, _ = governor_for("tools/call")
    raw = ('{"jsonrpc":"2.0","id":1,"result":{%s:%s}}' % (spelling, json.dumps(CATALOG))).encode()
    assert b'"tools"' not in raw and json.loads(raw)["result"]["tools"] == CATALOG  # a parser reads it as tools
    assert not governor.passes(raw)
    assert listed(json.loads(transform_json_body(raw, [governor]))) == READ_TOOLS


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-32-be"])
def test_a_list_answer_in_utf16_or_utf32_is_parsed_and_filtered(encoding):
    governor, _ = governor_for("tools/call")
    raw = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": CATALOG}}).encode(encoding)
    assert b'"tools"' not in raw and json.loads(raw)["result"]["tools"] == CATALOG
    assert not governor.passes(raw)
    assert listed(json.loads(transform_json_body(raw, [governor]))) == READ_TOOLS


def test_invalid_utf8_is_parsed_and_re_encoded():
    governor, _ = governor_for("tools/call")
    # an overlong encoding of "t": invalid UTF-8, a letter to a lenient decoder
    raw = b'{"jsonrpc":"2.0","id":1,"result":{"\xc1\xb4ools":[],"content":[]}}'
    assert not governor.passes(raw)
    assert transform_json_body(raw, [governor]) is not None  # never relayed as the upstream sent it
    valid = '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"caf\u00e9"}]}}'.encode()
    assert not valid.isascii() and governor.passes(valid)  # valid UTF-8 beyond ASCII passes


@pytest.mark.parametrize("array, method", [("prompts", "prompts/list"), ("resources", "resources/list"),
                                           ("resourceTemplates", "resources/templates/list")])
def test_every_list_shape_is_screened(array, method):
    governor, _ = governor_for("tools/call")
    assert not governor.passes(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {array: []}}).encode())


def test_a_stand_in_id_is_parsed_and_its_denial_delivered():
    legacy = {"Accept": "*/*", "Content-Type": "application/json"}
    ctx, flow, _ = request(SNAP, rpc("tools/call", {"name": "push_files"}, id=3), headers=legacy)
    token = json.loads(flow.request.content)["id"]
    own, _, _ = request(SNAP, None, method="GET", headers={})
    [governor] = own.server_transforms
    raw = json.dumps({"jsonrpc": "2.0", "id": token, "result": {}}).encode()
    assert not governor.passes(raw)
    out = json.loads(transform_json_body(raw, [governor]))
    assert out["id"] == 3 and out["error"]["code"] == -32602  # the denial, not the upstream's pong


def test_an_expected_task_answer_is_parsed_and_its_task_remembered():
    call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "search_code", "task": {}}}
    ctx, _, _ = request(SNAP, call)
    [governor] = ctx.server_transforms
    raw = json.dumps({"jsonrpc": "2.0", "id": 4, "result": {"task": {"taskId": "t-42"}}}).encode()
    assert not governor.passes(raw)
    assert transform_json_body(raw, [governor]) is None  # unchanged, and read
    assert ledger.tasks.get(("gh", "key-auth:dev-user", "t-42")) == ledger.TaskOrigin("search_code", True)


def test_a_task_expected_on_another_stream_keeps_every_answer_parsed():
    ledger.expected.put(("gh", "key-auth:dev-user", "sess-1", (int, 9)), ledger.Expected("tools/call", "search_code"))
    governor, _ = governor_for("tools/call")
    assert not governor.passes(json.dumps(CALL_ANSWER).encode())


def test_sse_events_are_screened_alike():
    governor, _ = governor_for("tools/call")
    counting = Counting(governor)
    stream = SSEStream([message_event_transform([counting])], None)
    plain = b"event: message\ndata: " + json.dumps(CALL_ANSWER).encode() + b"\n\n"
    assert relayed(stream, plain) == plain and counting.seen == 0
    listing = '{"jsonrpc":"2.0","id":1,"result":{"\\u0074ools":%s}}' % json.dumps(CATALOG)
    out = relayed(stream, b"event: message\ndata: " + listing.encode() + b"\n\n")
    assert counting.seen == 1
    assert listed(json.loads(out.split(b"data: ", 1)[1])) == READ_TOOLS
