"""The catalog of a passthrough MCP route, for allowed_tools inside LLM requests: the route holds
no stored credential to fetch its tool list with, so the names are those its own tools/list
answers carried through the gateway. A real mitmdump, the demo GitHub upstream (paginated
tools/list), the official MCP client on the MCP route, the demo provider and the `openai` SDK.

- before any tools/list went through, a caller whose tools come from the ACL's default gets only
  the ACL's explicit names: none here, so the request is refused 403 (fail closed);
- after one, allowed_tools is exactly what that caller's own tools/list showed, the client's own
  names (made up, denied) never added."""

from __future__ import annotations

import openai
import pytest

from scripts.demo_github_tools import READ_TOOLS, WRITE_TOOLS
from scripts.demo_llm_provider import Provider
from tests.support.gateway import Gateway, mcp_session
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

GUEST_KEY = "guest-api-key"


@pytest.fixture(scope="module")
def env(workdir, upstream):
    provider = Provider()
    server = ThreadedServer(provider.app)
    server.start()
    key_auth = {"key_names": ["apikey"], "hide_credentials": True}
    acl = {"consumer_identifier": "username", "include_consumer_groups": True,
           "default_acl": [{"scope": "tools", "deny": ["developer"]}],  # guests: every tool the ACL does not name
           "tools": [*({"name": t, "acl": {"allow": ["developer"]}} for t in READ_TOOLS),
                     *({"name": t, "acl": {"allow": ["admin"]}} for t in WRITE_TOOLS)]}
    policy = {
        "version": 1, "consumer_groups": ["admin", "developer", "guests"],
        "consumers": {"guest": {"groups": ["guests"], "keys": [GUEST_KEY]}},
        "services": {"github": {"url": upstream.url}, "openai": {"url": f"{server.base_url}/v1"}},
        "routes": {
            "github-pass": {"service": "github", "paths": ["/github-pass"], "key_auth": key_auth, "acl": acl},
            "openai": {"service": "openai", "paths": ["/openai"], "key_auth": key_auth,
                       "ai": {"route_type": "llm/v1/responses", "model": {"name": "gpt-4o"}}},
        },
    }
    gw = Gateway(workdir, policy, intercept=False)
    yield {"gw": gw, "provider": provider, "upstream": upstream}
    gw.stop()
    server.stop()


def ask(env, allowed: list[str] | None = None):
    tool = {"type": "mcp", "server_label": "github", "server_url": env["upstream"].url, "require_approval": "never",
            "headers": {"Authorization": "Bearer ghp_guestOwnPat"}}
    if allowed is not None:
        tool["allowed_tools"] = allowed
    client = openai.OpenAI(api_key="sk-x", base_url=env["gw"].url("/openai"), default_headers={"apikey": GUEST_KEY},
                           max_retries=0, timeout=60)
    client.responses.create(model="gpt-4o", input="hi", tools=[tool])
    return env["provider"].requests[-1]["body"]["tools"][0]


async def test_no_catalog_yet_is_fail_closed_then_the_routes_list_is_the_catalog(env):
    env["provider"].requests.clear()
    with pytest.raises(openai.PermissionDeniedError):
        ask(env)
    assert env["provider"].requests == []
    seen: list[str] = []
    async with mcp_session(env["gw"].url("/github-pass"), headers={"apikey": GUEST_KEY}) as session:
        cursor = None
        while True:  # every page, as a client reading the whole list does
            page = await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
            seen += [t.name for t in page.tools]
            cursor = page.nextCursor
            if not cursor:
                break
    assert seen and not set(seen) & (set(READ_TOOLS) | set(WRITE_TOOLS))
    assert ask(env)["allowed_tools"] == sorted(seen)
    # the client's own names narrow the list, never widen it
    assert ask(env, allowed=["made_up_tool", "push_files", seen[0]])["allowed_tools"] == [seen[0]]
