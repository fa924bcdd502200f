"""MCP tools inside LLM requests under an ACL on a token claim (acl_attribute_type:
oauth_access_token): the LLM route's OAuth token carries the claim, and allowed_tools is decided
from the same claim values as tools/list on the MCP route itself. A real mitmdump, the test
authorization server, the demo provider (which executes the MCP tools against the demo upstream)
and the official `openai` SDK. Attacker side: a claim the token does not carry, a subject named
like an allowed group, and a claim asserted in a header never widen the list; a tool the claim
denies is removed, and asking only for it is refused before the provider is asked."""

from __future__ import annotations

import openai
import pytest

from scripts.demo_llm_provider import Provider
from tests.support.gateway import Gateway
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

CLAIM = "github-mcp-access"
RESOURCE = "https://gateway.example.com/openai"


@pytest.fixture(scope="module")
def env(workdir, upstream, auth):
    provider = Provider()
    server = ThreadedServer(provider.app)
    server.start()
    oauth = {"authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url}
    policy = {
        "version": 1,
        "services": {"gh": {"url": upstream.url}, "openai": {"url": f"{server.base_url}/v1"}},
        "routes": {
            "github": {"service": "gh", "paths": ["/github"], "oauth": oauth,
                       "acl": {"acl_attribute_type": "oauth_access_token", "access_token_claim_field": f".{CLAIM}",
                               "default_acl": [{"scope": "tools", "allow": ["github-admins"]}],
                               "tools": [{"name": "search_repositories",
                                          "acl": {"allow": ["github-cicd-agents", "github-admins"]}},
                                         {"name": "get_file_contents",
                                          "acl": {"allow": ["github-cicd-agents", "github-admins"], "deny": ["quarantined"]}}]}},
            "openai": {"service": "openai", "paths": ["/openai"], "oauth": {**oauth, "resource": RESOURCE},
                       "ai": {"route_type": "llm/v1/responses", "model": {"name": "gpt-4o"},
                              "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider-claims-3"}}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False)
    yield {"gw": gw, "provider": provider, "upstream": upstream, "auth": auth}
    gw.stop()
    server.stop()


def ask(env, token: str, allowed: list[str] | None = None, headers: dict | None = None):
    tool = {"type": "mcp", "server_label": "github", "server_url": env["upstream"].url, "require_approval": "never"}
    if allowed is not None:
        tool["allowed_tools"] = allowed
    client = openai.OpenAI(api_key=token, base_url=env["gw"].url("/openai"), max_retries=0, timeout=60,
                           default_headers=headers or {})
    return client.responses.create(model="gpt-4o", input="list the tools", tools=[tool])


def sent_tools(env) -> list[str]:
    return env["provider"].requests[-1]["body"]["tools"][0]["allowed_tools"]


def test_the_claim_decides_allowed_tools_and_the_answers_list(env):
    auth, provider = env["auth"], env["provider"]
    provider.requests.clear()
    answer = ask(env, auth.mint("scanner", aud=RESOURCE, extra={CLAIM: "github-cicd-agents"}))
    assert sent_tools(env) == ["get_file_contents", "search_repositories"]
    listed = next(i for i in answer.output if i.type == "mcp_list_tools")
    assert sorted(t.name for t in listed.tools) == ["get_file_contents", "search_repositories"]


def test_a_claim_denied_tool_is_removed_and_asking_only_for_it_is_refused(env):
    auth, provider = env["auth"], env["provider"]
    both = auth.mint("mixed", aud=RESOURCE, extra={CLAIM: ["github-cicd-agents", "quarantined"]})
    provider.requests.clear()
    ask(env, both)
    assert sent_tools(env) == ["search_repositories"]  # deny wins, as in tools/list
    provider.requests.clear()
    with pytest.raises(openai.PermissionDeniedError):
        ask(env, both, allowed=["get_file_contents"])
    assert provider.requests == []


def test_no_claim_a_lookalike_subject_or_a_header_grants_nothing(env):
    auth, provider = env["auth"], env["provider"]
    provider.requests.clear()
    for token, headers in ((auth.mint("nobody", aud=RESOURCE), {}),
                           (auth.mint("github-admins", aud=RESOURCE), {}),  # the subject is no claim value
                           (auth.mint("nobody", aud=RESOURCE), {CLAIM: "github-admins", "X-Consumer-Groups": "github-admins"}),
                           (auth.mint("odd", aud=RESOURCE, extra={CLAIM: {"group": "github-admins"}}), {})):
        with pytest.raises(openai.PermissionDeniedError):
            ask(env, token, headers=headers)
    assert provider.requests == []
