"""MCP tools inside LLM requests, end to end: the official `openai` SDK sends Responses requests
with `tools: [{type: "mcp", ...}]` through a real mitmdump; the demo provider executes them for
real against the demo GitHub MCP server (official MCP SDK), as OpenAI's servers would.

As dev-api-key (group developer, the recipe's ACL): the provider receives allowed_tools equal to
the six read tools and the MCP route's stored credential in place of the client's; the MCP server
receives that credential; an unknown server_url is refused; mcp_list_tools in the answer lists
only allowed tools even when the provider ignores allowed_tools (JSON and stream); each mcp_call
is one audit record."""

from __future__ import annotations

import json
import time

import openai
import pytest

from scripts.demo_github_tools import READ_TOOLS, TOOL_NAMES, WRITE_TOOLS
from scripts.demo_llm_provider import Provider
from tests.support.gateway import DemoUpstream, Gateway
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

PROVIDER_KEY = "sk-org-provider-key-19be77"
STORED_PAT = "ghp_storedOrgPat0000111122223333"
CLIENT_PAT = "ghp_agentOwnPat999988887777"
DEV_KEY, ADMIN_KEY, GUEST_KEY = "dev-api-key", "admin-api-key", "guest-api-key"
SIX = sorted(READ_TOOLS)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ai-mcp")
    upstream = DemoUpstream(workdir)
    provider = Provider()
    server = ThreadedServer(provider.app)
    server.start()
    acl = {"consumer_identifier": "username", "include_consumer_groups": True,
           "default_acl": [{"scope": "tools", "deny": ["developer"]}],
           "tools": [*({"name": t, "acl": {"allow": ["admin", "developer"]}} for t in READ_TOOLS),
                     *({"name": t, "acl": {"allow": ["admin"]}} for t in WRITE_TOOLS)]}
    key_auth = {"key_names": ["apikey"], "hide_credentials": True}
    policy = {
        "version": 1,
        "consumer_groups": ["admin", "developer", "guests"],
        "consumers": {"admin-user": {"groups": ["admin"], "keys": [ADMIN_KEY]},
                      "dev-user": {"groups": ["developer"], "keys": [DEV_KEY]},
                      "guest": {"groups": ["guests"], "keys": [GUEST_KEY]}},
        "services": {"github": {"url": upstream.url}, "openai": {"url": f"{server.base_url}/v1"},
                     "open-mcp": {"url": upstream.base + "/open"}},
        "routes": {
            "github-mcp": {"service": "github", "paths": ["/github-mcp"], "key_auth": key_auth, "acl": acl,
                           "credentials": {"mode": "inject", "add": {"headers": ["Authorization:Bearer {env://GITHUB_PAT}"]}}},
            "open-mcp": {"service": "open-mcp", "paths": ["/open-mcp"]},
            "openai": {"service": "openai", "paths": ["/openai"], "key_auth": key_auth,
                       "ai": {"route_type": "llm/v1/responses", "model": {"name": "gpt-4o"},
                              "auth": {"header_name": "Authorization", "header_value": "Bearer {env://OPENAI_KEY}"},
                              "mcp": {"require_approval": {"get_file_contents": "always"}},
                              "logging": {"log_payloads": True}}},
        },
    }
    audit = workdir / "audit.jsonl"
    gw = Gateway(workdir, policy, env={"OPENAI_KEY": PROVIDER_KEY, "GITHUB_PAT": STORED_PAT},
                 extra=["--set", f"mcp_audit={audit}", "-w", str(workdir / "flows.mitm")])
    yield {"gw": gw, "provider": provider, "upstream": upstream, "audit": audit, "provider_base": server.base_url,
           "flows": workdir / "flows.mitm"}
    gw.stop()
    server.stop()
    upstream.stop()


def oai(env, key: str = DEV_KEY) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-agent-own", base_url=env["gw"].url("/openai"), default_headers={"apikey": key},
                         max_retries=0, timeout=60)


def github_tool(server_url: str, **extra) -> dict:
    return {"type": "mcp", "server_label": "github", "server_url": server_url, "require_approval": "never",
            "headers": {"Authorization": f"Bearer {CLIENT_PAT}"}, **extra}


CALL = 'call search_repositories {"query": "mcp gateway"}'


def test_dev_gets_the_six_read_tools_and_the_stored_credential(env):
    provider, upstream = env["provider"], env["upstream"]
    provider.requests.clear()
    upstream.reset()
    answer = oai(env).responses.create(model="gpt-4o", input=CALL, tools=[github_tool(upstream.url + "/")])
    tool = provider.requests[-1]["body"]["tools"][0]
    assert tool["allowed_tools"] == SIX
    assert tool["headers"] == {"Authorization": f"Bearer {STORED_PAT}"}  # the client's PAT replaced
    assert CLIENT_PAT not in json.dumps(provider.requests[-1])
    # the approval the policy forces for get_file_contents, the client's "never" for the rest
    assert tool["require_approval"] == {"always": {"tool_names": ["get_file_contents"]},
                                        "never": {"tool_names": [n for n in SIX if n != "get_file_contents"]}}
    listed = next(i for i in answer.output if i.type == "mcp_list_tools")
    assert sorted(t.name for t in listed.tools) == SIX
    call = next(i for i in answer.output if i.type == "mcp_call")
    assert call.name == "search_repositories" and call.status == "completed"
    seen = [r for r in upstream.requests() if r.get("tool") == "search_repositories"]
    assert seen and seen[-1]["headers"]["authorization"] == f"Bearer {STORED_PAT}"


def test_server_named_by_its_gateway_url_and_the_clients_list_intersected(env):
    provider = env["provider"]
    provider.requests.clear()
    oai(env).responses.create(model="gpt-4o", input="hello", tools=[github_tool(
        env["gw"].url("/github-mcp"), allowed_tools=["push_files", "search_code"])])
    assert provider.requests[-1]["body"]["tools"][0]["allowed_tools"] == ["search_code"]
    provider.requests.clear()
    oai(env).responses.create(model="gpt-4o", input="hello", tools=[github_tool(
        env["upstream"].url, allowed_tools={"tool_names": ["list_issues", "merge_pull_request"], "read_only": True})])
    assert provider.requests[-1]["body"]["tools"][0]["allowed_tools"] == {"tool_names": ["list_issues"], "read_only": True}


def test_unknown_server_and_connectors_are_refused(env):
    provider = env["provider"]
    provider.requests.clear()
    with pytest.raises(openai.BadRequestError) as e:
        oai(env).responses.create(model="gpt-4o", input="hi", tools=[github_tool("https://evil.example.com/mcp")])
    assert "https://evil.example.com/mcp" in str(e.value) and "github" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        oai(env).responses.create(model="gpt-4o", input="hi", tools=[
            {"type": "mcp", "server_label": "gmail", "connector_id": "connector_gmail", "require_approval": "never"}])
    with pytest.raises(openai.BadRequestError):  # two tools under one label would make the answer ambiguous
        oai(env).responses.create(model="gpt-4o", input="hi", tools=[github_tool(env["upstream"].url)] * 2)
    assert provider.requests == []


def test_default_allowed_tools_come_from_the_routes_catalog(env):
    # admin: the eleven tools the ACL names, and every other tool of the server, which the ACL's
    # default allows to admin: the gateway fetched the catalog with the route's stored credential
    provider, upstream = env["provider"], env["upstream"]
    provider.requests.clear()
    upstream.reset()
    oai(env, ADMIN_KEY).responses.create(model="gpt-4o", input="hi", tools=[github_tool(upstream.url)])
    sent = provider.requests[-1]["body"]["tools"][0]["allowed_tools"]
    assert sent == sorted(TOOL_NAMES) and len(sent) > 11
    lists = [r for r in upstream.requests() if r.get("rpc_method") == "tools/list"]
    assert lists and {r["headers"].get("authorization") for r in lists} <= {f"Bearer {STORED_PAT}"}


def test_a_caller_with_no_tool_is_refused_and_an_ungoverned_route_passes(env):
    # guests: the ACL names no tool for them, and its default denies them nothing, so the
    # catalog's tools are theirs; with a deny-by-default list they would get none
    oai(env, GUEST_KEY).responses.create(model="gpt-4o", input="hi", tools=[github_tool(env["upstream"].url)])
    sent = env["provider"].requests[-1]["body"]["tools"][0]["allowed_tools"]
    assert set(sent) == set(TOOL_NAMES) - set(READ_TOOLS) - set(WRITE_TOOLS)
    # a developer asking only for tools it may not call: nothing left, refused
    with pytest.raises(openai.PermissionDeniedError):
        oai(env).responses.create(model="gpt-4o", input="hi", tools=[github_tool(env["upstream"].url,
                                                                                allowed_tools=["push_files"])])
    provider = env["provider"]
    provider.requests.clear()
    open_tool = {"type": "mcp", "server_label": "open", "server_url": env["upstream"].base + "/open",
                 "require_approval": "never", "headers": {"Authorization": f"Bearer {CLIENT_PAT}"}}
    oai(env, GUEST_KEY).responses.create(model="gpt-4o", input="hi", tools=[open_tool])
    sent = provider.requests[-1]["body"]["tools"][0]
    assert "allowed_tools" not in sent and sent["headers"] == {"Authorization": f"Bearer {CLIENT_PAT}"}  # passthrough


def test_list_filtered_even_when_the_provider_ignores_allowed_tools(env):
    upstream = env["upstream"]
    ignore = {"x-demo-ignore-allowed-tools": "1"}
    answer = oai(env).responses.create(model="gpt-4o", input="hi", tools=[github_tool(upstream.url)], extra_headers=ignore)
    listed = next(i for i in answer.output if i.type == "mcp_list_tools")
    assert sorted(t.name for t in listed.tools) == SIX
    events = list(oai(env).responses.create(model="gpt-4o", input="hi", tools=[github_tool(upstream.url)],
                                            extra_headers=ignore, stream=True))
    items = [e.item for e in events if e.type == "response.output_item.done" and e.item.type == "mcp_list_tools"]
    assert [sorted(t.name for t in i.tools) for i in items] == [SIX]
    final = next(i for i in events[-1].response.output if i.type == "mcp_list_tools")
    assert sorted(t.name for t in final.tools) == SIX
    # without the gateway's filter this provider lists them all: the assertions above can fail
    direct = openai.OpenAI(api_key="x", base_url=env["provider_base"] + "/v1", max_retries=0).responses.create(
        model="gpt-4o", input="hi", tools=[github_tool(upstream.url)], extra_headers=ignore)
    listed = next(i for i in direct.output if i.type == "mcp_list_tools")
    assert len(listed.tools) > len(SIX)


def test_each_mcp_call_is_one_audit_record(env):
    before = len(env["audit"].read_text().splitlines()) if env["audit"].exists() else 0
    list(oai(env).responses.create(model="gpt-4o", input=CALL, tools=[github_tool(env["upstream"].url)], stream=True))
    oai(env).responses.create(model="gpt-4o", input=CALL, tools=[github_tool(env["upstream"].url)])
    for _ in range(100):
        records = [json.loads(line) for line in env["audit"].read_text().splitlines()[before:]]
        calls = [r for r in records if "mcp_call" in r]
        if len(calls) >= 2:
            break
        time.sleep(0.1)
    assert len(calls) == 2
    for r in calls:
        assert (r["route"], r["consumer"]["name"], r["name"], r["decision"]) == ("openai", "dev-user", "search_repositories", "allow")
        assert r["mcp_call"]["route"] == "github-mcp" and r["mcp_call"]["status"] == "completed"
    llm = [r for r in records if "llm" in r]
    assert llm and llm[-1]["llm"]["mcp_servers"] == {"github": "github-mcp"}
    # log_payloads: the request as sent (the stored credential masked) and the JSON answer; a stream's answer is not held
    payload = llm[-1]["llm"]["payload"]
    assert payload["request"]["tools"][0]["allowed_tools"] == SIX
    assert payload["request"]["tools"][0]["headers"]["Authorization"] != f"Bearer {STORED_PAT}"
    assert any(i["type"] == "mcp_call" for i in payload["response"]["output"])
    assert [r for r in llm if r["llm"]["stream"]][-1]["llm"]["payload"]["response"] == {"omitted": "a stream (never held)"}
    text = env["audit"].read_text() + env["gw"].log()
    assert STORED_PAT not in text and CLIENT_PAT not in text and PROVIDER_KEY not in text


def test_mitmweb_shows_the_llm_call_and_its_mcp_tool_calls(env):
    oai(env).responses.create(model="gpt-4o", input=CALL, tools=[github_tool(env["upstream"].url)])
    from mitmproxy import io

    for _ in range(50):
        with open(env["flows"], "rb") as f:
            comments = [fl.comment for fl in io.FlowReader(f).stream() if getattr(fl, "comment", "")]
        if any("mcp_call search_repositories" in c for c in comments):
            break
        time.sleep(0.1)
    last = [c for c in comments if "mcp_call" in c][-1]
    assert "dev-user [developer] MCP server github -> route github-mcp: allowed_tools 6" in last
    assert "dev-user [developer] LLM gpt-4o:" in last and "tokens" in last
    assert "mcp_call search_repositories on github (github-mcp): allowed, completed" in last
