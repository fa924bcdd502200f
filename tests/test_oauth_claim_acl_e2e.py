"""ACLs on a token claim (acl_attribute_type: oauth_access_token) end to end, with no consumer
defined: a real mitmdump, the test authorization server, the demo upstream and the official MCP
client. As in seed 004, the github-mcp-access claim names the agent's group; two tokens with
different values see different tool lists, and calls agree with the lists."""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import McpError

from tests.support.gateway import Gateway, mcp_session

pytestmark = pytest.mark.e2e

SEARCH = {"query": "kong"}
CLAIM = "github-mcp-access"


@pytest.fixture(scope="module")
def gateway(workdir, upstream, auth):
    policy = {
        "services": {"gh": {"url": upstream.url}},
        "routes": {
            "github": {
                "service": "gh", "paths": ["/github"],
                "oauth": {"authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url},
                "acl": {"acl_attribute_type": "oauth_access_token", "access_token_claim_field": f".{CLAIM}",
                        "default_acl": [{"scope": "tools", "allow": ["github-admins"]}],
                        "tools": [{"name": "search_repositories", "acl": {"allow": ["github-cicd-agents", "github-admins"]}},
                                  {"name": "get_file_contents", "acl": {"allow": ["github-cicd-agents", "github-admins"],
                                                                        "deny": ["quarantined"]}}]},
            },
            "nested": {
                "service": "gh", "paths": ["/nested"],
                "oauth": {"authorization_servers": [auth.url], "jwks_endpoint": auth.jwks_url},
                "acl": {"acl_attribute_type": "oauth_access_token", "access_token_claim_field": ".user.email",
                        "default_acl": [{"scope": "tools", "allow": ["ops@example.com"]}]},
            },
        },
    }
    gw = Gateway(workdir, policy, intercept=False)
    yield gw
    gw.stop()


async def tools_as(gateway, url: str, token: str) -> set[str]:
    async with mcp_session(url, gateway=gateway, headers={"Authorization": f"Bearer {token}"}) as session:
        return {t.name for t in (await session.list_tools()).tools}


async def test_two_claim_values_see_different_tools(gateway, upstream, auth):
    url = gateway.url("/github")
    agent = auth.mint("scanner", aud=url, extra={CLAIM: "github-cicd-agents"})
    admin = auth.mint("root", aud=url, extra={CLAIM: ["github-admins"]})
    assert await tools_as(gateway, url, agent) == {"search_repositories", "get_file_contents"}
    admin_tools = await tools_as(gateway, url, admin)
    assert len(admin_tools) > 100 and "push_files" in admin_tools


async def test_calls_agree_with_the_list(gateway, upstream, auth):
    url = gateway.url("/github")
    agent = auth.mint("scanner", aud=url, extra={CLAIM: "github-cicd-agents"})
    upstream.reset()
    async with mcp_session(url, gateway=gateway, headers={"Authorization": f"Bearer {agent}"}) as session:
        assert not (await session.call_tool("search_repositories", SEARCH)).isError
        with pytest.raises(McpError, match="not available"):
            await session.call_tool("push_files", {"owner": "o", "repo": "r", "branch": "b", "files": [],
                                                   "message": "m"})
    assert upstream.tool_calls() == ["search_repositories"]


async def test_deny_and_missing_or_foreign_claims(gateway, upstream, auth):
    url = gateway.url("/github")
    both = auth.mint("mixed", aud=url, extra={CLAIM: ["github-cicd-agents", "quarantined"]})
    assert await tools_as(gateway, url, both) == {"search_repositories"}  # deny wins
    assert await tools_as(gateway, url, auth.mint("nobody", aud=url)) == set()  # no claim, no subject
    # the subject of the token is not a claim value: a token for "github-admins" the user is not enough
    assert await tools_as(gateway, url, auth.mint("github-admins", aud=url)) == set()
    # a claim of the wrong type names nobody
    assert await tools_as(gateway, url, auth.mint("odd", aud=url, extra={CLAIM: {"group": "github-admins"}})) == set()


async def test_nested_claim_path(gateway, upstream, auth):
    url = gateway.url("/nested")
    ops = auth.mint("ops", aud=url, extra={"user": {"email": "ops@example.com"}})
    dev = auth.mint("dev", aud=url, extra={"user": {"email": "dev@example.com"}})
    assert len(await tools_as(gateway, url, ops)) > 100
    assert await tools_as(gateway, url, dev) == set()
