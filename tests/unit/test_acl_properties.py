"""Generated policies, consumers and tool catalogs: what a list shows, what a call may do and
Kong's documented rules always agree."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mcpgw.governance import explain
from mcpgw.governance.filtering import ResponseGovernor
from mcpgw.identity.consumers import Identity
from mcpgw.protocol.messages import transform_json_body

from .governance_flows import call, request, rpc, snapshot, tool

USERS = ["alice", "bob", "carol"]
GROUPS = ["admin", "developer", "suspended"]
TOOL_NAMES = [f"tool_{i}" for i in range(8)]

subject_lists = st.one_of(st.none(), st.lists(st.sampled_from(USERS + GROUPS), max_size=3))
acl_lists = st.fixed_dictionaries({}, optional={"allow": subject_lists, "deny": subject_lists})
tool_entries = st.lists(
    st.fixed_dictionaries({"name": st.sampled_from(TOOL_NAMES)}, optional={"acl": acl_lists}),
    unique_by=lambda entry: entry["name"], max_size=6)
acl_settings = st.fixed_dictionaries(
    {"tools": tool_entries, "include_consumer_groups": st.booleans()},
    optional={"default_acl": st.lists(acl_lists.map(lambda lists: {**lists, "scope": "tools"}), max_size=1)})
identities = st.one_of(st.none(), st.builds(
    Identity, st.sampled_from(USERS), groups=st.lists(st.sampled_from(GROUPS), unique=True, max_size=2).map(tuple)))
catalogs = st.lists(st.sampled_from(TOOL_NAMES + ["unlisted_a", "unlisted_b"]), unique=True, max_size=10)


def kong_allows(acl: dict, identity: Identity | None, name: str) -> bool:
    """Kong's documented evaluation, written out independently of the gateway's code."""
    subjects = set()
    if identity is not None:
        subjects.add(identity.username)
        if acl["include_consumer_groups"]:
            subjects.update(identity.groups)
    own = next((t["acl"] for t in acl["tools"] if t["name"] == name and "acl" in t), None)
    lists = own if own is not None else next(iter(acl.get("default_acl", [])), {})
    allow, deny = lists.get("allow"), lists.get("deny")
    if deny and subjects & set(deny):
        return False
    if allow is not None:
        return bool(subjects & set(allow))
    return True


def filtered(snap, identity, catalog: list[str]) -> list[str]:
    ctx, _, answer = request(snap, rpc("tools/list", {}, id=1), identity)
    assert answer is None
    [governor] = [t for t in ctx.server_transforms if isinstance(t, ResponseGovernor)]
    raw = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": [tool(n) for n in catalog], "nextCursor": "c"}})
    out = transform_json_body(raw.encode(), [governor])
    result = json.loads(out if out is not None else raw)["result"]
    assert result["nextCursor"] == "c"
    return [t["name"] for t in result["tools"]]


@settings(max_examples=150, deadline=None)
@given(acl=acl_settings, identity=identities, catalog=catalogs)
def test_lists_calls_and_kong_rules_agree(acl, identity, catalog):
    snap = snapshot(acl)
    shown = filtered(snap, identity, catalog)
    assert shown == [n for n in catalog if kong_allows(acl, identity, n)]  # order kept, nothing extra
    for name in catalog:
        decision = explain(snap.policy, "gh", identity, "tool", name)
        assert decision.allowed == (name in shown)
        ctx, flow, answer = request(snap, call(name, id=5), identity)
        if name in shown:  # every listed tool is callable
            assert answer is None and ctx.decisions[0].allowed
        else:  # no denied call is forwarded: the gateway answers it
            assert answer is not None and answer.status_code == 200
            assert json.loads(answer.content)["error"]["code"] == -32602
            assert flow.marked == ":no_entry:"


@settings(max_examples=60, deadline=None)
@given(acl=acl_settings, identity=identities, names=st.lists(st.sampled_from(TOOL_NAMES), min_size=1, max_size=4))
def test_a_batch_is_forwarded_only_if_every_call_in_it_is_allowed(acl, identity, names):
    snap = snapshot(acl)
    batch = [call(name, id=i) for i, name in enumerate(names)]
    _, _, answer = request(snap, batch, identity)
    all_allowed = all(kong_allows(acl, identity, n) for n in names)
    assert (answer is None) == all_allowed
    if answer is not None:
        errors = json.loads(answer.content)
        assert [e["id"] for e in errors] == list(range(len(names)))
        assert {e["id"] for e in errors if e["error"]["code"] == -32602} == \
            {i for i, n in enumerate(names) if not kong_allows(acl, identity, n)}
