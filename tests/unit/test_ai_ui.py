"""The "LLM" content view (ai/ui.py) through mitmproxy's contentview API, on bodies the demo
provider really produces (its ASGI app called in process) and on requests as the openai SDK
shapes them: chosen for the LLM endpoints' bodies, summary first, secrets masked, and never
chosen for other bodies (MCP JSON-RPC, JSON elsewhere)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from mitmproxy import contentviews, http
from mitmproxy.test import taddons, tflow

from mcpgw import redaction
from mcpgw.ai.ui import LlmContentview
from scripts.demo_llm_provider import Provider

STORED = "ghp_viewStoredPat00001111222233334444"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "who am I"}], "max_tokens": 64}
RESPONSES = {"model": "gpt-4o", "input": "hello there", "stream": True,
             "tools": [{"type": "mcp", "server_label": "github", "server_url": "https://api.githubcopilot.com/mcp/",
                        "allowed_tools": ["get_me", "search_code"], "require_approval": "never",
                        "headers": {"Authorization": f"Bearer {STORED}"}}]}


@pytest.fixture(autouse=True)
def view():
    with taddons.context():
        contentviews.add(LlmContentview)
        yield


def provider_answer(path: str, body: dict) -> http.Response:
    async def ask():
        transport = httpx.ASGITransport(app=Provider().app)
        async with httpx.AsyncClient(transport=transport, base_url="http://provider") as c:
            return await c.post(path, json=body)
    r = asyncio.run(ask())
    return http.Response.make(r.status_code, r.content, {"content-type": r.headers["content-type"]})


def flow_for(path: str, body: dict) -> http.HTTPFlow:
    flow = tflow.tflow(req=tflow.treq(method=b"POST", path=path.encode(), content=json.dumps(body).encode()))
    flow.request.headers["content-type"] = "application/json"
    flow.response = provider_answer(path, body)
    return flow


def test_chat_request_and_json_answer():
    flow = flow_for("/v1/chat/completions", CHAT)
    request = contentviews.prettify_message(flow.request, flow)
    assert request.view_name == "LLM"
    assert request.text.splitlines()[:2] == ["# chat request · model gpt-4o · max_tokens 64", "# [user] who am I"]
    answer = contentviews.prettify_message(flow.response, flow)
    first = answer.text.splitlines()[0]
    assert answer.view_name == "LLM" and first.startswith("# chat.completion · model gpt-4o · finish stop · usage ")
    assert "# [assistant] echo: who am I" in answer.text
    assert json.loads(answer.text.split("\n", 2)[2])["object"] == "chat.completion"


def test_chat_stream_summary_and_events():
    flow = flow_for("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    text = contentviews.prettify_message(flow.response, flow).text
    lines = text.splitlines()
    assert lines[0].startswith("# stream · ") and "usage " in lines[0] and lines[0].endswith("ends [DONE]")
    assert lines[1] == "# text: echo: who am I"
    assert lines[2].startswith("# [1] chat.completion.chunk {") and lines[-1].endswith("[DONE]")


def test_responses_request_with_mcp_tools_masks_the_stored_credential():
    redaction.remember([STORED])
    flow = flow_for("/v1/responses", {**RESPONSES, "tools": []})
    flow.request.content = json.dumps(RESPONSES).encode()
    text = contentviews.prettify_message(flow.request, flow).text
    assert "# responses request · model gpt-4o · stream" in text
    assert "# input: hello there" in text
    assert ('# tool mcp github -> https://api.githubcopilot.com/mcp/ · allowed_tools 2: get_me, search_code'
            ' · require_approval "never"') in text
    assert STORED not in text
    stream = contentviews.prettify_message(flow.response, flow).text
    assert stream.startswith("# stream · ") and "response.completed" in stream


def test_an_error_answer_and_other_bodies():
    flow = flow_for("/v1/chat/completions", {"messages": "not a list"})
    flow.response = http.Response.make(400, json.dumps({"error": {"message": "cannot use own model - must be: gpt-4o",
                                                                  "type": "invalid_request_error", "param": None,
                                                                  "code": "model_not_allowed"}}),
                                       {"content-type": "application/json"})
    assert contentviews.prettify_message(flow.response, flow).text.startswith(
        "# error · invalid_request_error · code model_not_allowed\n# cannot use own model - must be: gpt-4o")
    other = tflow.tflow(req=tflow.treq(method=b"POST", path=b"/github-mcp", content=json.dumps(CHAT).encode()))
    other.request.headers["content-type"] = "application/json"
    assert contentviews.prettify_message(other.request, other).view_name != "LLM"  # not an LLM endpoint
    rpc = flow_for("/v1/chat/completions", CHAT)
    rpc.response = http.Response.make(200, b'{"jsonrpc": "2.0", "id": 1, "result": {}}', {"content-type": "application/json"})
    assert contentviews.prettify_message(rpc.response, rpc).view_name != "LLM"


def test_responses_json_answer():
    flow = flow_for("/v1/responses", {"model": "gpt-4o", "input": "hi"})
    lines = contentviews.prettify_message(flow.response, flow).text.splitlines()
    assert lines[0].startswith("# response · completed · model gpt-4o · usage ") and lines[1] == "# [assistant] echo: hi"


def test_the_gateway_addon_registers_the_view(tmp_path):
    from mitmproxy.addons.proxyserver import Proxyserver

    from mcpgw.addon import MCPGateway

    contentviews.registry._by_name.pop("llm", None)  # what the other tests added: the addon must add it itself
    path = tmp_path / "p.yaml"
    path.write_text("services: {s: {url: 'http://127.0.0.1:9/v1'}}\nroutes: {r: {service: s, paths: [/r], "
                    "ai: {route_type: llm/v1/chat}}}\n")
    addon = MCPGateway()
    with taddons.context(Proxyserver(), addon) as tctx:
        tctx.configure(addon, mcp_policy=str(path))
        flow = flow_for("/r/chat/completions", CHAT)
        assert contentviews.prettify_message(flow.request, flow).view_name == "LLM"
