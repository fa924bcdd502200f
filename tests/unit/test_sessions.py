"""Session binding phases (sessions/binding.py) and who a caller is (sessions/caller.py)."""

from types import SimpleNamespace

import pytest
from mitmproxy.test import tflow
from mitmproxy.test.tutils import tresp

from mcpgw import context
from mcpgw.context import FlowContext
from mcpgw.identity.consumers import Identity
from mcpgw.protocol.jsonrpc import parse_strict
from mcpgw.protocol.sse import SSEEvent
from mcpgw.sessions import binding
from mcpgw.sessions.caller import caller_key
from mcpgw.state import MemorySessionStore

from .governance_flows import ADMIN, DEV, body, snapshot

SNAP = snapshot()


@pytest.fixture(autouse=True)
def store():
    fresh = MemorySessionStore()
    binding.use(fresh)
    return fresh


def flow_for(method="POST", path="/gh", headers=(), identity=DEV, content=b""):
    flow = tflow.tflow()
    flow.request.method = method
    flow.request.path = path
    flow.request.headers.clear()
    for name, value in headers:
        flow.request.headers.add(name, value)
    flow.request.content = content
    ctx = context.attach(flow, FlowContext(SNAP, "gateway", SNAP.routes.match_gateway("/gh")))
    ctx.identity = identity
    return ctx, flow


async def bind(store, session, identity=ADMIN):
    ctx, flow = flow_for(identity=identity)
    await store.bind("gh", session, caller_key(ctx, flow.request), 60)


# --- check_session: on the way in --------------------------------------------------------------

async def test_requests_without_a_session_pass():
    ctx, flow = flow_for()
    assert await binding.check_session(ctx, flow) is None
    assert ctx.session_id is None and ctx.caller == "key-auth:dev-user"


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
async def test_unknown_and_foreign_sessions_are_not_found(store, method):
    await bind(store, "admins")
    for session in ("admins", "never-issued", ""):
        ctx, flow = flow_for(method, headers=[("Mcp-Session-Id", session), ("Accept", "application/json")])
        answer = await binding.check_session(ctx, flow)
        assert answer.status_code == 404, session
        if method == "POST":
            assert body(answer) == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
        else:
            assert body(answer) == {"message": "Session not found"}
        assert ctx.session_id is None


async def test_the_owner_passes_and_its_session_is_the_flows(store):
    await bind(store, "admins")
    ctx, flow = flow_for(headers=[("mcp-session-id", "admins")], identity=ADMIN)
    assert await binding.check_session(ctx, flow) is None
    assert ctx.session_id == "admins"


@pytest.mark.parametrize("headers, path", [
    ([("Mcp_Session_Id", "admins")], "/gh"),
    ([("MCP_SESSION-ID", "admins")], "/gh"),
    ([], "/gh/messages/?session_id=admins"),
    ([], "/gh/messages/?sessionId=admins"),
    ([], "/gh/messages/?session%5Fid=admins"),
    ([], "/gh/messages/?x=1&SESSION_ID=admins"),
    ([("Mcp-Session-Id", "devs")], "/gh/messages/?session_id=admins"),  # one of its own does not help
    ([("Mcp-Session-Id", "devs"), ("Mcp-Session-Id", "admins")], "/gh"),
])
async def test_every_spelling_of_a_session_id_is_checked(store, headers, path):
    await bind(store, "admins")
    await bind(store, "devs", DEV)
    ctx, flow = flow_for(path=path, headers=headers)
    assert (await binding.check_session(ctx, flow)).status_code == 404


async def test_prm_and_unmatched_flows_are_not_sessions():
    ctx, flow = flow_for(headers=[("Mcp-Session-Id", "x")])
    ctx.match = None
    assert await binding.check_session(ctx, flow) is None


# --- record_session: on the way out ----------------------------------------------------------

def answered(ctx, flow, status=200, headers=(), messages=None):
    if messages is not None:
        ctx.messages, _ = parse_strict(messages)
    flow.response = tresp(status_code=status)
    flow.response.headers.clear()
    for name, value in headers:
        flow.response.headers.add(name, value)
    return binding.record_session(ctx, flow)


INITIALIZE = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}'
PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'


async def test_the_session_an_initialize_answer_issues_is_bound_to_the_caller(store):
    ctx, flow = flow_for(identity=ADMIN)
    await binding.check_session(ctx, flow)
    assert answered(ctx, flow, 200, [("Mcp-Session-Id", "new")], INITIALIZE) is None
    assert await store.owner("gh", "new") == "key-auth:admin-user" and ctx.session_id == "new"


async def test_session_headers_on_other_answers_bind_nothing(store):
    for status, messages in ((200, PING), (400, INITIALIZE), (500, INITIALIZE)):
        ctx, flow = flow_for()
        await binding.check_session(ctx, flow)
        answered(ctx, flow, status, [("Mcp-Session-Id", f"s{status}")], messages)
        assert await store.owner("gh", f"s{status}") is None


async def test_an_upstream_reissuing_someone_elses_session_is_refused(store):
    await bind(store, "admins")
    ctx, flow = flow_for()
    await binding.check_session(ctx, flow)
    assert answered(ctx, flow, 200, [("Mcp-Session-Id", "admins")], INITIALIZE).status_code == 502
    assert await store.owner("gh", "admins") == "key-auth:admin-user"


async def test_accepted_delete_and_upstream_404_end_the_session(store):
    for method, status in (("DELETE", 200), ("POST", 404), ("GET", 404)):
        await bind(store, "admins")
        ctx, flow = flow_for(method, headers=[("Mcp-Session-Id", "admins")], identity=ADMIN)
        assert await binding.check_session(ctx, flow) is None
        answered(ctx, flow, status)
        assert await store.owner("gh", "admins") is None, (method, status)


async def test_refused_requests_end_nothing(store):
    await bind(store, "admins")
    # the developer's request was answered 404 by the gateway, not by the upstream
    ctx, flow = flow_for("DELETE", headers=[("Mcp-Session-Id", "admins")])
    refusal = await binding.check_session(ctx, flow)
    ctx.answered_by = "sessions.binding.check_session"
    flow.response = refusal
    binding.record_session(ctx, flow)
    # the owner's DELETE refused upstream
    ctx, flow = flow_for("DELETE", headers=[("Mcp-Session-Id", "admins")], identity=ADMIN)
    await binding.check_session(ctx, flow)
    answered(ctx, flow, 405)
    assert await store.owner("gh", "admins") == "key-auth:admin-user"


async def test_the_legacy_endpoint_event_binds_its_session_id(store):
    ctx, flow = flow_for("GET", path="/gh/sse")
    await binding.check_session(ctx, flow)
    answered(ctx, flow, 200, [("Content-Type", "text/event-stream")])
    [watch] = ctx.event_transforms
    ping = SSEEvent(data='{"jsonrpc":"2.0","method":"ping"}', event="message")
    assert watch(ping) is ping
    endpoint = SSEEvent(data="/messages/?session_id=abc123", event="endpoint")
    assert watch(endpoint) is endpoint
    assert await store.owner("gh", "abc123") == "key-auth:dev-user" and ctx.session_id == "abc123"


async def test_a_legacy_endpoint_naming_someone_elses_session_is_withheld(store):
    await bind(store, "admins")
    ctx, flow = flow_for("GET", path="/gh/sse")
    await binding.check_session(ctx, flow)
    answered(ctx, flow, 200, [("Content-Type", "text/event-stream")])
    out = ctx.event_transforms[0](SSEEvent(data="/messages/?session_id=admins", event="endpoint"))
    assert out.data is None and out.event is None and "withheld" in out.comments[0]


# --- who the caller is -----------------------------------------------------------------------

def key_of(identity, headers=(), path="/gh"):
    ctx, flow = flow_for(identity=identity, headers=headers, path=path)
    return caller_key(ctx, flow.request)


def test_a_consumer_is_itself_whatever_credential_it_presents():
    assert key_of(DEV, [("Authorization", "Bearer a")]) == key_of(DEV, [("Authorization", "Bearer b")])
    assert key_of(DEV) != key_of(ADMIN)
    assert key_of(Identity("dev-user", method="oauth")) != key_of(DEV)  # a token subject is not the consumer


def test_without_a_consumer_the_caller_is_its_credentials():
    alice = key_of(None, [("Authorization", "Bearer alice-token")])
    assert alice == key_of(None, [("authorization", "Bearer alice-token"), ("Cookie", "lb=1")])
    assert alice != key_of(None, [("Authorization", "Bearer mallory-token")])
    assert alice != key_of(None)
    assert key_of(None, path="/gh?access_token=a") != key_of(None, path="/gh?access_token=b")
    assert key_of(None, [("X-Api-Key", "a")]) != key_of(None, [("X-Api-Key", "b")])
    anonymous = Identity("guest", method="anonymous")
    assert key_of(anonymous, [("Authorization", "Bearer a")]) != key_of(anonymous, [("Authorization", "Bearer b")])
    assert "alice-token" not in alice
    # the order of headers and those that say nothing of credentials do not change who the caller is
    assert (key_of(None, [("Accept", "x"), ("X-Api-Key", "a"), ("Authorization", "b")])
            == key_of(None, [("authorization", "b"), ("User-Agent", "z"), ("x-api-key", "a")]))
    assert key_of(None, [("X-Api-Key", "a"), ("Authorization", "b")]) != key_of(None, [("X-Api-Key", "b"), ("Authorization", "a")])


def test_the_store_is_handed_over_across_a_script_reload():
    master = SimpleNamespace()
    first = binding.handover(master)
    assert binding.handover(master) is first  # the re-imported package finds the same store
