"""OpenTelemetry for an LLM route: the official `openai` SDK through a real mitmdump, against the
demo OpenAI-compatible provider, with spans exported to a real OTLP receiver: GenAI names,
model and token usage on the gateway's spans, the trace continued into the provider."""

from __future__ import annotations

import openai
import pytest

from scripts.demo_llm_provider import Provider
from tests.support.threaded_server import ThreadedServer
from tests.test_telemetry_e2e import Receiver, traced_gateway, trace_id, traceparent

pytestmark = pytest.mark.e2e

KEY, PROVIDER_KEY = "llm-telemetry-key-3c7", "sk-provider-telemetry-91ab"


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    provider = Provider()
    server = ThreadedServer(provider.app)
    server.start()
    provider.base = server.base_url
    receiver = Receiver()
    policy = {
        "consumers": {"alex": {"keys": [KEY]}},
        "services": {"openai": {"url": f"{provider.base}/v1"}},
        "routes": {"chat": {"service": "openai", "paths": ["/chat"],
                            "key_auth": {"key_names": ["apikey"], "hide_credentials": True},
                            "ai": {"route_type": "llm/v1/chat",
                                   "auth": {"header_name": "Authorization", "header_value": "Bearer {env://OPENAI_KEY}"},
                                   "model": {"name": "gpt-4o"}}}},
    }
    gw = traced_gateway(tmp_path_factory.mktemp("llm-telemetry"), policy, receiver, OPENAI_KEY=PROVIDER_KEY)
    yield gw, provider, receiver
    gw.stop()
    receiver.stop()
    server.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_llm_call_spans_carry_model_and_usage(running, stream):
    gw, provider, receiver = running
    tid = trace_id()
    provider.requests.clear()
    client = openai.OpenAI(api_key="sk-client-ignored", base_url=gw.url("/chat"), max_retries=0,
                           default_headers={"apikey": KEY, "traceparent": traceparent(tid)})
    messages = [{"role": "user", "content": "say hello to the gateway"}]
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="gpt-4o", messages=messages, stream=True) if c.choices)
    else:
        text = client.chat.completions.create(model="gpt-4o", messages=messages).choices[0].message.content
    assert text == "echo: say hello to the gateway"
    spans = receiver.wait_spans(lambda s: s["trace_id"] == tid, count=2)
    server = next(s for s in spans if s["attrs"].get("mcpgw.decision"))
    client_span = next(s for s in spans if s is not server)
    assert server["name"] == client_span["name"] == "chat gpt-4o"
    assert client_span["parent"] == server["span_id"]
    a = server["attrs"]
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "gpt-4o"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["mcpgw.llm.stream"] is stream
    assert client_span["attrs"]["gen_ai.usage.output_tokens"] == a["gen_ai.usage.output_tokens"]
    sent = provider.requests[-1]["headers"]
    assert sent.get("traceparent") == f"00-{tid}-{client_span['span_id']}-01"
    everything = str(receiver.spans)
    assert PROVIDER_KEY not in everything and KEY not in everything
