"""Attacks through what the upstream answers with a URL (issue 12 item 5): a real mitmdump running
the gateway in front of the demo upstream. The upstream builds `Location` from the address it was
reached at, the service's; passed through, that address leaks to the client and sends it round
the gateway: a trailing slash alone took a developer straight to the upstream, with every tool of
it callable. The legitimate client, whose URL merely ends in a slash, must keep working.

Extend this module with every answer header or body field in which an upstream names itself."""

from __future__ import annotations

import httpx
import pytest
from mcp import McpError

from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc, mcp_session

pytestmark = pytest.mark.e2e

INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "attacker", "version": "1"}}
DEV = {"apikey": "dev-api-key", "Authorization": "Bearer demo-user-token"}
PUSH = {"name": "push_files", "arguments": {"owner": "o", "repo": "r", "branch": "main", "message": "m",
                                            "files": [{"path": "a", "content": "b"}]}}
ACL = {"consumer_identifier": "username", "include_consumer_groups": True,
       "default_acl": [{"scope": "tools", "deny": ["developer"]}],
       "tools": [{"name": n, "acl": {"allow": ["admin", "developer"]}}
                 for n in ("search_repositories", "get_file_contents", "list_issues", "list_pull_requests",
                           "search_users", "search_code")] + [{"name": "push_files", "acl": {"allow": ["admin"]}}]}


@pytest.fixture(scope="module")
def upstream(workdir):
    up = DemoUpstream(workdir, name="upstream")
    yield up
    up.stop()


@pytest.fixture(scope="module")
def bystander(workdir):
    up = DemoUpstream(workdir, name="bystander")  # a server no route governs
    yield up
    up.stop()


@pytest.fixture(scope="module")
def gateway(workdir, upstream):
    governed = {"key_auth": {"hide_credentials": True}, "acl": ACL, "upstream_identity_headers": True}
    policy = {
        "consumer_groups": ["admin", "developer"],
        "consumers": {"admin-user": {"groups": ["admin"], "keys": ["admin-api-key"]},
                      "dev-user": {"groups": ["developer"], "keys": ["dev-api-key"]}},
        "services": {"github": {"url": upstream.url}, "whole": {"url": upstream.base},
                     "tests": {"url": upstream.base + "/_test"}},
        "routes": {"github-mcp": {"service": "github", "paths": ["/github-mcp"], **governed},
                   "whole": {"service": "whole", "paths": ["/whole"], **governed},  # the server's root
                   "tests": {"service": "tests", "paths": ["/tests"], **governed}},  # only its /_test
    }
    gw = Gateway(workdir, policy, intercept=False)
    yield gw
    gw.stop()


def upstream_addresses(upstream: DemoUpstream) -> tuple[str, ...]:
    port = upstream.base.rsplit(":", 1)[1]
    return (f"127.0.0.1:{port}", f"localhost:{port}")


def post(url: str, message: dict, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, json=message, headers={**MCP_HEADERS, **headers}, timeout=20, follow_redirects=False)


def test_a_trailing_slash_gets_a_redirect_to_the_gateway_not_to_the_upstream(gateway, upstream):
    answer = post(gateway.url("/github-mcp/"), jsonrpc("initialize", INIT), DEV)
    assert answer.status_code == 307
    assert answer.headers["location"] == gateway.url("/github-mcp")
    for name, value in answer.headers.multi_items():
        assert not any(a in value for a in upstream_addresses(upstream)), f"{name}: {value} names the upstream"


async def test_a_developer_following_the_redirect_stays_governed(gateway, upstream):
    """The official client follows redirects: before, it followed this one to the upstream, which
    listed a developer every tool and ran push_files."""
    upstream.reset()
    async with mcp_session(gateway.url("/github-mcp/"), headers=DEV) as session:
        tools = (await session.list_tools()).tools
        with pytest.raises(McpError) as refused:
            await session.call_tool(PUSH["name"], PUSH["arguments"])
    assert len(tools) == 6 and "push_files" not in {t.name for t in tools}
    assert "not available for consumer group 'developer'" in refused.value.error.message
    assert upstream.tool_calls() == []  # refused before the upstream
    seen = [r for r in upstream.requests() if r["rpc_method"]]
    assert seen and all(r["headers"].get("x-consumer-username") == "dev-user" for r in seen)  # all through the gateway


def redirect(gateway: Gateway, route: str, to: str, status: int = 302) -> httpx.Response:
    """The upstream's /_test/redirect?to=URL, asked through `route`."""
    return httpx.get(gateway.url(f"{route}/redirect" if route == "/tests" else f"{route}/_test/redirect"),
                     params={"to": to, "status": str(status)}, headers={"apikey": "dev-api-key"},
                     follow_redirects=False, timeout=20)


def test_an_upstream_redirect_into_itself_names_the_route(gateway, upstream):
    answer = redirect(gateway, "/whole", f"{upstream.base}/mcp")
    assert answer.status_code == 302 and answer.headers["location"] == gateway.url("/whole/mcp")
    answer = redirect(gateway, "/tests", f"{upstream.base}/_test/echo?x=1", 308)
    assert answer.status_code == 308 and answer.headers["location"] == gateway.url("/tests/echo?x=1")


@pytest.mark.parametrize("to", ["{base}/mcp", "/mcp", "//{authority}/admin", "http://{host}:99999/x"])
def test_an_upstream_redirect_to_itself_outside_the_route_is_removed(gateway, upstream, to):
    """The /tests route reaches the upstream's /_test only: a URL of the upstream elsewhere could
    only disclose the upstream (and is no way in through this route)."""
    authority = upstream.base.split("://")[1]
    to = to.format(base=upstream.base, authority=authority, host=authority.rsplit(":", 1)[0])
    answer = redirect(gateway, "/tests", to)
    assert answer.status_code == 302 and "location" not in answer.headers
    for value in answer.headers.values():
        assert not any(a in value for a in upstream_addresses(upstream))


def test_a_redirect_to_another_server_is_passed_on_and_never_followed(gateway, upstream, bystander):
    bystander.reset()
    elsewhere = bystander.url  # another port of the same host: another server
    answer = redirect(gateway, "/whole", elsewhere, 307)
    assert answer.status_code == 307 and answer.headers["location"] == elsewhere
    assert bystander.requests() == []  # the gateway did not go there


async def test_the_plain_url_still_works(gateway):
    async with mcp_session(gateway.url("/github-mcp"), headers={"apikey": "admin-api-key",
                                                                "Authorization": "Bearer t"}) as session:
        assert len((await session.list_tools()).tools) > 100
