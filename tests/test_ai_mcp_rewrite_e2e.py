"""ai.mcp.rewrite_server_url end to end: the provider is sent to the MCP route's URL on this
gateway instead of the MCP server, so its MCP calls come back through the route and are governed
a second time, call by call. A real mitmdump, the demo provider (which runs the MCP tools for
real, as OpenAI's servers would), the demo GitHub upstream and the official `openai` SDK.

- the provider receives the gateway's route URL, the six read tools as allowed_tools, and no
  stored credential (the MCP route adds it itself); the upstream receives the stored one;
- the provider's tool call is audited on the MCP route as the caller's own call;
- a provider that ignores allowed_tools still cannot call a write tool: the MCP route refuses it
  and the upstream never sees it;
- the base URL is the policy's gateway.urls, never the Host the client sent; without it the
  request is refused before the provider is asked."""

from __future__ import annotations

import json
import time

import openai
import pytest

from scripts.demo_github_tools import READ_TOOLS, WRITE_TOOLS
from scripts.demo_llm_provider import Provider
from tests.support.gateway import Gateway
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

STORED_PAT = "ghp_rewriteStoredPat000111222"
DEV_KEY = "dev-api-key"
SIX = sorted(READ_TOOLS)


def policy(upstream, provider_base: str, urls: list[str]) -> dict:
    key_auth = {"key_names": ["apikey"], "hide_credentials": True}
    acl = {"consumer_identifier": "username", "include_consumer_groups": True,
           "default_acl": [{"scope": "tools", "deny": ["developer"]}],
           "tools": [*({"name": t, "acl": {"allow": ["developer"]}} for t in READ_TOOLS),
                     *({"name": t, "acl": {"allow": ["admin"]}} for t in WRITE_TOOLS)]}
    return {
        "version": 1, "gateway": {"urls": urls},
        "consumer_groups": ["admin", "developer"],
        "consumers": {"dev-user": {"groups": ["developer"], "keys": [DEV_KEY]}},
        "services": {"github": {"url": upstream.url}, "openai": {"url": f"{provider_base}/v1"}},
        "routes": {
            "github-mcp": {"service": "github", "paths": ["/github-mcp"], "key_auth": key_auth, "acl": acl,
                           "credentials": {"mode": "inject", "add": {"headers": [f"Authorization:Bearer {STORED_PAT}"]}}},
            "openai": {"service": "openai", "paths": ["/openai"], "key_auth": key_auth,
                       "ai": {"route_type": "llm/v1/responses", "model": {"name": "gpt-4o"},
                              "mcp": {"rewrite_server_url": True}}},
        },
    }


@pytest.fixture(scope="module")
def env(workdir, upstream):
    provider = Provider()
    server = ThreadedServer(provider.app)
    server.start()
    audit = workdir / "audit.jsonl"
    gw = Gateway(workdir, policy(upstream, server.base_url, []), intercept=False, extra=["--set", f"mcp_audit={audit}"])
    gw.write_policy(policy(upstream, server.base_url, [gw.base]))  # its own address, known once it runs
    gw.process.wait_for(r"policy version \d+ loaded", count=2)
    yield {"gw": gw, "provider": provider, "upstream": upstream, "audit": audit, "provider_base": server.base_url}
    gw.stop()
    server.stop()


def oai(env, **headers) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-agent-own", base_url=env["gw"].url("/openai"), max_retries=0, timeout=60,
                         default_headers={"apikey": DEV_KEY, **headers})


def tool(env) -> dict:
    # the headers are for the gateway now: the caller's key for the MCP route
    return {"type": "mcp", "server_label": "github", "server_url": env["upstream"].url, "require_approval": "never",
            "headers": {"apikey": DEV_KEY}}


def audit_records(env, pred, count: int = 1) -> list[dict]:
    deadline = time.monotonic() + 30
    while True:
        found = [r for r in map(json.loads, env["audit"].read_text().splitlines()) if pred(r)] if env["audit"].exists() else []
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_the_provider_calls_back_through_the_mcp_route(env):
    provider, upstream = env["provider"], env["upstream"]
    provider.requests.clear()
    upstream.reset()
    answer = oai(env).responses.create(model="gpt-4o", input='call search_repositories {"query": "gw"}', tools=[tool(env)])
    sent = provider.requests[-1]["body"]["tools"][0]
    assert sent["server_url"] == env["gw"].url("/github-mcp")
    assert sent["allowed_tools"] == SIX and STORED_PAT not in json.dumps(provider.requests[-1])
    call = next(i for i in answer.output if i.type == "mcp_call")
    assert (call.name, call.status) == ("search_repositories", "completed")
    seen = [r for r in upstream.requests() if r.get("tool") == "search_repositories"]
    assert seen and seen[-1]["headers"]["authorization"] == f"Bearer {STORED_PAT}"
    # governed twice: the LLM call's mcp_call record, and the MCP route's own record of the call
    routed = audit_records(env, lambda r: r.get("route") == "github-mcp" and r.get("name") == "search_repositories")
    assert routed and routed[-1]["decision"] == "allow" and routed[-1]["consumer"]["name"] == "dev-user"


def test_a_provider_ignoring_allowed_tools_is_stopped_by_the_route(env):
    upstream = env["upstream"]
    upstream.reset()
    answer = oai(env, **{"x-demo-ignore-allowed-tools": "1"}).responses.create(
        model="gpt-4o", input='call push_files {"owner": "o", "repo": "r", "branch": "b", "files": [], "message": "m"}',
        tools=[tool(env)])
    listed = next(i for i in answer.output if i.type == "mcp_list_tools")
    assert sorted(t.name for t in listed.tools) == SIX  # the route filtered tools/list for the provider too
    call = next(i for i in answer.output if i.type == "mcp_call")
    assert call.status == "failed"
    assert "push_files" not in upstream.tool_calls()
    denied = audit_records(env, lambda r: r.get("route") == "github-mcp" and r.get("name") == "push_files")
    assert denied and denied[-1]["decision"] == "deny"


def test_the_base_is_the_policys_never_the_clients_host(env):
    provider = env["provider"]
    provider.requests.clear()
    with pytest.raises(openai.PermissionDeniedError):  # a host the gateway does not serve is refused outright
        oai(env, Host="evil.example.com").responses.create(model="gpt-4o", input="hi", tools=[tool(env)])
    # an accepted alias (loopback names always are) still sends the provider to gateway.urls
    oai(env, Host=f"localhost:{env['gw'].port}").responses.create(model="gpt-4o", input="hi", tools=[tool(env)])
    assert provider.requests[-1]["body"]["tools"][0]["server_url"] == env["gw"].url("/github-mcp")
    assert "localhost" not in env["gw"].url("/github-mcp")


def test_without_gateway_urls_the_request_is_refused(env, workdir):
    gw = Gateway(workdir, policy(env["upstream"], env["provider_base"], []), intercept=False, name="no-urls")
    try:
        env["provider"].requests.clear()
        with pytest.raises(openai.InternalServerError) as e:
            openai.OpenAI(api_key="x", base_url=gw.url("/openai"), default_headers={"apikey": DEV_KEY},
                          max_retries=0).responses.create(model="gpt-4o", input="hi", tools=[tool(env)])
        assert "gateway.urls" in str(e.value)
        assert env["provider"].requests == []
    finally:
        gw.stop()
