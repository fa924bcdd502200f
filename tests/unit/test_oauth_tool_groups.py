"""Per-tool ACLs (ai-mcp-proxy's default_acl and tools[].acl with include_consumer_groups) matching
the groups the caller's validated token authenticated (oauth authenticated_groups_claim), by the
same rule as route access (governance/groups.py): the decision function for calls and lists, and
tools/call through the addon's hooks with tokens from the test authorization server."""

from __future__ import annotations

import json

import pytest

from mcpgw.governance import explain
from mcpgw.governance.acl import route_acl
from mcpgw.governance.engine import groups_of, subjects_of, view
from mcpgw.identity.consumers import Identity
from mcpgw.policy.models import Policy
from tests.support.authserver import AuthServer
from tests.unit.test_addon import reverse_flow, through
from tests.unit.test_oauth_groups import REALM, RESOURCE, auth  # noqa: F401 (auth: a fixture)

ACL = {
    "include_consumer_groups": True,
    "default_acl": [{"scope": "tools", "allow": ["ops"]}],
    "tools": [{"name": "push_files", "acl": {"allow": ["admin"]}},
              {"name": "search_repositories", "acl": {"allow": ["ops", "developer"]}},
              {"name": "get_me", "acl": {"allow": ["ops-user"]}}],  # a consumer, by username
}


def policy_doc(auth_url: str = "https://idp.test", jwks: str = "https://idp.test/jwks") -> dict:
    oauth = {"authorization_servers": [auth_url], "jwks_endpoint": jwks, "resource": RESOURCE,
             "consumer_claim": ["sub"], "consumer_by": ["username"], "consumer_optional": True,
             "authenticated_groups_claim": REALM}
    return {
        "consumer_groups": ["developer"],
        "consumers": {"dev-user": {"groups": ["developer"]}, "ops-user": {}},
        "services": {"gh": {"url": "https://api.githubcopilot.com/mcp"}},
        "routes": {
            "github-mcp": {"service": "gh", "paths": ["/github-mcp"], "oauth": oauth, "acl": ACL},
            "always": {"service": "gh", "paths": ["/always"], "oauth": {**oauth, "resource": RESOURCE + "-always"},
                       "access": {"deny": ["blocked"], "always_use_authenticated_groups": True}, "acl": ACL},
            "consumers-only": {"service": "gh", "paths": ["/consumers-only"], "oauth": oauth,
                               "acl": {**ACL, "include_consumer_groups": False}},
        },
    }


POLICY = Policy.model_validate(policy_doc())
AGENT = Identity("svc-agent", method="oauth", authenticated_groups=("ops", "reader"))  # a token mapped to no consumer
DEV_WITH_ADMIN = Identity("dev-user", groups=("developer",), method="oauth", authenticated_groups=("admin",))
DEV_WITHOUT = Identity("dev-user", groups=("developer",), method="oauth")


def allowed(route: str, identity: Identity, tool: str) -> bool:
    return explain(POLICY, route, identity, "tool", tool).allowed


def test_a_token_without_a_consumer_is_matched_by_its_authenticated_groups():
    acl = route_acl(POLICY, "github-mcp")
    assert groups_of(AGENT, acl) == ("ops", "reader")
    assert allowed("github-mcp", AGENT, "search_repositories") and allowed("github-mcp", AGENT, "list_issues")
    assert not allowed("github-mcp", AGENT, "push_files")
    # lists and calls ask one view: a listed tool is a callable one
    subject_view = view(acl, AGENT)
    assert [subject_view.tool(t).allowed for t in ("push_files", "search_repositories", "list_issues")] == \
        [False, True, True]


def test_a_consumer_by_the_acl_rule_of_the_route():
    # no always_use_authenticated_groups: a mapped consumer is matched on its consumer groups
    assert groups_of(DEV_WITH_ADMIN, route_acl(POLICY, "github-mcp")) == ("developer",)
    assert allowed("github-mcp", DEV_WITH_ADMIN, "search_repositories")
    assert not allowed("github-mcp", DEV_WITH_ADMIN, "push_files")
    # the route's access says always: the token's groups alone, never mixed with the consumer's
    assert groups_of(DEV_WITH_ADMIN, route_acl(POLICY, "always")) == ("admin",)
    assert allowed("always", DEV_WITH_ADMIN, "push_files")
    assert not allowed("always", DEV_WITH_ADMIN, "search_repositories")
    # ... falling back to the consumer's when the token names none
    assert groups_of(DEV_WITHOUT, route_acl(POLICY, "always")) == ("developer",)
    assert allowed("always", DEV_WITHOUT, "search_repositories")


def test_without_include_consumer_groups_no_group_is_a_subject():
    acl = route_acl(POLICY, "consumers-only")
    assert groups_of(AGENT, acl) == () and subjects_of(AGENT, acl) == frozenset({"svc-agent"})
    assert not allowed("consumers-only", AGENT, "search_repositories")


def test_attack_an_authenticated_group_spelt_like_a_consumer_is_no_subject():
    """The authorization server names groups: a group "ops-user" must not pass get_me's entry for
    the consumer ops-user."""
    impostor = Identity("svc-agent", method="oauth", authenticated_groups=("ops-user", "ops"))
    assert groups_of(impostor, route_acl(POLICY, "github-mcp")) == ("ops",)
    assert not allowed("github-mcp", impostor, "get_me")
    assert allowed("github-mcp", Identity("ops-user", method="oauth"), "get_me")


def test_anonymous_and_key_auth_callers_are_unchanged():
    assert groups_of(Identity("dev-user", groups=("developer",)), route_acl(POLICY, "always")) == ("developer",)
    assert not allowed("github-mcp", Identity("anon", method="anonymous"), "list_issues")


# -- through the hooks: the groups come from the validated token only ----------------------------------


def tools_call(name: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": name, "arguments": {}}}).encode()


async def call_tool(addon, auth: AuthServer, sub: str, extra: dict, tool: str, headers: dict | None = None,
                    path: str = "/github-mcp", aud: str = RESOURCE):
    f = reverse_flow(path)
    f.request.content = tools_call(tool)
    f.request.headers["Accept"] = "application/json, text/event-stream"  # Streamable HTTP: answered on the POST
    f.request.headers["Authorization"] = f"Bearer {auth.mint(sub, aud=aud, extra=extra)}"
    for name, value in (headers or {}).items():
        f.request.headers.add(name, value)
    return await through(addon, f)


def denial(f) -> str | None:
    if f.response is None:
        return None
    body = json.loads(f.response.content)
    assert f.response.status_code == 200 and body["error"]["code"] == -32602, body
    return body["error"]["message"]


def roles(value) -> dict:
    return {"realm_access": {"roles": value}}


async def test_calls_by_the_token_groups(gateway_with, auth):
    addon = gateway_with(policy_doc(auth.url, auth.jwks_url))
    assert denial(await call_tool(addon, auth, "svc-agent", roles(["ops"]), "search_repositories")) is None
    assert denial(await call_tool(addon, auth, "svc-agent", roles(["admin"]), "push_files")) is None
    assert denial(await call_tool(addon, auth, "svc-agent", roles(["ops"]), "push_files")) == \
        "Tool 'push_files' is not available for consumer group 'ops'"
    # a mapped consumer: its consumer groups here, the token's on the route whose access says always
    assert denial(await call_tool(addon, auth, "dev-user", roles(["admin"]), "push_files")) is not None
    assert denial(await call_tool(addon, auth, "dev-user", roles(["admin"]), "push_files", path="/always",
                                  aud=RESOURCE + "-always")) is None


async def test_attack_forged_headers_missing_or_malformed_claims_grant_nothing(gateway_with, auth):
    addon = gateway_with(policy_doc(auth.url, auth.jwks_url))
    forged = {"X-Authenticated-Groups": "admin", "X_Authenticated_Groups": "admin", "X-Consumer-Groups": "admin"}
    for extra in ({}, roles(None), roles([]), roles({"admin": True}), roles(7), {"realm_access": "admin"},
                  {"groups": ["admin"]}, roles([["admin"]])):
        f = await call_tool(addon, auth, "svc-agent", extra, "push_files", forged)
        assert denial(f) == "Tool 'push_files' is not available for consumer 'svc-agent'", extra
    # one string is one group name (as route access reads it), never split into two
    assert denial(await call_tool(addon, auth, "svc-agent", roles("admin"), "push_files")) is None
    assert denial(await call_tool(addon, auth, "svc-agent", roles("ops admin"), "push_files")) is not None
    # a token of another audience never gets as far as its groups
    f = await call_tool(addon, auth, "svc-agent", roles(["admin"]), "push_files", aud="http://other.test/mcp")
    assert f.response.status_code == 401
