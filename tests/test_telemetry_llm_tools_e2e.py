"""OpenTelemetry for the MCP tool calls an LLM makes inside a Responses request: the official
`openai` SDK through a real mitmdump, the demo provider executing the `mcp` tool for real against
the demo MCP server, spans exported to a real OTLP receiver. Each mcp_call of the answer is a
`tools/call {name}` span under the LLM call's CLIENT span, JSON and stream; a call outside the
tools the gateway allowed (a provider that ignores allowed_tools) is an error span without the
provider's tool name in its span name."""

from __future__ import annotations

import openai
import pytest

from scripts.demo_github_tools import READ_TOOLS
from scripts.demo_llm_provider import Provider
from tests.support.gateway import DemoUpstream, Gateway
from tests.support.threaded_server import ThreadedServer
from tests.test_telemetry_e2e import Receiver, traced_gateway, trace_id, traceparent

pytestmark = pytest.mark.e2e

KEY, PROVIDER_KEY = "llm-tools-telemetry-key-5d2", "sk-provider-llm-tools-77aa"
CALL = 'call search_repositories {"query": "mcp gateway"}'


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("llm-tools-telemetry")
    upstream = DemoUpstream(workdir)
    provider = Provider()
    server = ThreadedServer(provider.app)
    server.start()
    receiver = Receiver()
    key_auth = {"key_names": ["apikey"], "hide_credentials": True}
    policy = {
        "consumer_groups": ["developer"],
        "consumers": {"dev-user": {"groups": ["developer"], "keys": [KEY]}},
        "services": {"github": {"url": upstream.url}, "openai": {"url": f"{server.base_url}/v1"}},
        "routes": {
            "github-mcp": {"service": "github", "paths": ["/github-mcp"], "key_auth": key_auth,
                           "acl": {"consumer_identifier": "username", "include_consumer_groups": True,
                                   "default_acl": [{"scope": "tools", "deny": ["developer"]}],
                                   "tools": [{"name": t, "acl": {"allow": ["developer"]}} for t in READ_TOOLS]}},
            "openai": {"service": "openai", "paths": ["/openai"], "key_auth": key_auth,
                       "ai": {"route_type": "llm/v1/responses", "model": {"name": "gpt-4o"},
                              "auth": {"header_name": "Authorization", "header_value": "Bearer {env://OPENAI_KEY}"}}},
        },
    }
    gw = traced_gateway(workdir, policy, receiver, OPENAI_KEY=PROVIDER_KEY)
    yield gw, upstream, receiver
    gw.stop()
    receiver.stop()
    server.stop()
    upstream.stop()


def responses(gw: Gateway, upstream: DemoUpstream, tid: str, stream: bool, call: str = CALL,
              ignore_allowed: bool = False):
    client = openai.OpenAI(api_key="sk-agent-own", base_url=gw.url("/openai"), max_retries=0, timeout=60,
                           default_headers={"apikey": KEY, "traceparent": traceparent(tid),
                                            **({"x-demo-ignore-allowed-tools": "1"} if ignore_allowed else {})})
    return client.responses.create(model="gpt-4o", input=call, stream=stream, tools=[
        {"type": "mcp", "server_label": "github", "server_url": upstream.url, "require_approval": "never"}])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_each_mcp_call_is_a_span_under_the_llm_call(env, stream):
    gw, upstream, receiver = env
    tid = trace_id()
    answer = responses(gw, upstream, tid, stream)
    items = [e.item for e in answer if e.type == "response.output_item.done"] if stream else answer.output
    assert [i.name for i in items if i.type == "mcp_call"] == ["search_repositories"]
    spans = receiver.wait_spans(lambda s: s["trace_id"] == tid, count=3)
    server = next(s for s in spans if s["attrs"].get("mcpgw.decision") and s["name"].startswith("chat"))
    llm_client = next(s for s in spans if s["parent"] == server["span_id"])
    tool, = [s for s in spans if s["parent"] == llm_client["span_id"]]
    assert tool["name"] == "tools/call search_repositories"
    a = tool["attrs"]
    assert a["mcp.method.name"] == "tools/call" and a["gen_ai.tool.name"] == "search_repositories"
    assert a["gen_ai.operation.name"] == "execute_tool" and a["mcpgw.decision"] == "allow"
    assert a["mcpgw.route"] == "github-mcp" and a["mcpgw.llm.mcp_server_label"] == "github"
    assert "error.type" not in a and tool["status"] != 2
    assert llm_client["start"] <= tool["start"] <= tool["end"] <= llm_client["end"]
    assert PROVIDER_KEY not in str(receiver.spans) and KEY not in str(receiver.spans)


def test_a_call_outside_the_allowed_tools_is_an_error_span(env):
    gw, upstream, receiver = env
    tid = trace_id()
    answer = responses(gw, upstream, tid, False, call='call push_files {"owner": "o", "repo": "r", "branch": "b", '
                                            '"files": [], "message": "m"}', ignore_allowed=True)
    assert [i.name for i in answer.output if i.type == "mcp_call"] == ["push_files"]  # the provider did call it
    tool, = receiver.wait_spans(lambda s: s["trace_id"] == tid and s["attrs"].get("mcp.method.name") == "tools/call")
    assert tool["name"] == "tools/call"  # the provider's name for a call the gateway did not allow
    assert tool["attrs"]["gen_ai.tool.name"] == "push_files"
    assert tool["attrs"]["mcpgw.decision"] == "outside_allowed_tools" and tool["status"] == 2
