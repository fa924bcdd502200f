"""LLM routes in intercept mode over real TLS: the agent keeps the provider's own HTTPS base URL
and reaches it through the gateway's proxy listener by HTTPS_PROXY (the environment, as agents
are configured), trusting the gateway's CA by SSL_CERT_FILE. The demo provider serves HTTPS with
its own certificate; the official `openai` SDK is the client.

- JSON and streamed chat and Responses answers (one provider, a route for each API) equal the
  direct answers; the provider receives the injected
  key only, never the agent's own nor its gateway key; usage is audited per call (mode
  intercept) and matches the provider's;
- without the gateway key, or with a wrong one, nothing reaches the provider (401)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from scripts.demo_llm_provider import Provider
from tests.support.gateway import Gateway
from tests.support.threaded_server import ThreadedServer
from tests.support.tls import make_server_cert

pytestmark = pytest.mark.e2e

PROVIDER_KEY = "sk-intercept-provider-key-4471"
AGENT_KEY, GATEWAY_KEY = "sk-agent-own-intercept-93", "intercept-consumer-key"
MESSAGES = [{"role": "user", "content": "over tls please"}]


@pytest.fixture(scope="module")
def env(workdir):
    cert, key = make_server_cert(workdir, ("localhost",))
    provider = Provider()
    server = ThreadedServer(provider.app, ssl_certfile=str(cert), ssl_keyfile=str(key))
    server.start()
    base = f"https://localhost:{server.port}/v1"
    policy = {"version": 1, "consumers": {"agent": {"keys": [GATEWAY_KEY]}},
              "services": {"openai": {"url": base}},
              "routes": {kind: {"service": "openai", "paths": [f"/{kind}"], "key_auth": {"key_names": ["apikey"]},
                                "ai": {"route_type": f"llm/v1/{kind}", "model": {"name": "gpt-4o"},
                                       "auth": {"header_name": "Authorization", "header_value": f"Bearer {PROVIDER_KEY}"}}}
                         for kind in ("chat", "responses")}}  # one provider, both APIs, as an agent uses it
    audit = workdir / "audit.jsonl"
    gw = Gateway(workdir, policy, extra=["--set", f"mcp_audit={audit}"])  # both listeners (ssl_insecure: a self-signed provider)
    yield {"gw": gw, "provider": provider, "base": base, "cert": cert, "audit": audit}
    gw.stop()
    server.stop()


@pytest.fixture
def through_proxy(env, monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", env["gw"].proxy_url)
    monkeypatch.setenv("SSL_CERT_FILE", str(env["gw"].ca_cert))


def agent(env, gateway_key: str | None = GATEWAY_KEY) -> openai.OpenAI:
    return openai.OpenAI(api_key=AGENT_KEY, base_url=env["base"], max_retries=0, timeout=60,
                         default_headers={"apikey": gateway_key} if gateway_key else {})


def direct(env) -> openai.OpenAI:
    return openai.OpenAI(api_key=PROVIDER_KEY, base_url=env["base"], max_retries=0, timeout=60,
                         http_client=httpx.Client(verify=str(env["cert"]), trust_env=False))


def llm_records(env, count: int) -> list[dict]:
    deadline = time.monotonic() + 30
    while True:
        path = env["audit"]
        found = [r for r in map(json.loads, path.read_text().splitlines()) if "llm" in r] if path.exists() else []
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def text_of(stream) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_json_and_stream_through_https_proxy_equal_direct(env, through_proxy):
    provider = env["provider"]
    provider.requests.clear()
    answer = agent(env).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    streamed = text_of(agent(env).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    through = list(provider.requests)
    want = direct(env).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert answer.choices[0].message.content == want.choices[0].message.content == streamed
    assert answer.usage.total_tokens == want.usage.total_tokens
    assert len(through) == 2
    for seen in through:
        assert seen["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}" and "apikey" not in seen["headers"]
        assert AGENT_KEY not in json.dumps(seen) and GATEWAY_KEY not in json.dumps(seen)
    records = llm_records(env, 2)
    assert {r["mode"] for r in records[-2:]} == {"intercept"}
    assert records[-2]["llm"]["total_tokens"] == answer.usage.total_tokens and records[-1]["llm"]["stream"] is True


def test_responses_json_and_stream_through_https_proxy_equal_direct(env, through_proxy):
    provider = env["provider"]
    provider.requests.clear()
    answer = agent(env).responses.create(model="gpt-4o", input="over tls please")
    events = list(agent(env).responses.create(model="gpt-4o", input="over tls please", stream=True))
    through = list(provider.requests)
    want = direct(env).responses.create(model="gpt-4o", input="over tls please")
    assert answer.output_text == want.output_text
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == want.output_text
    assert events[-1].type == "response.completed" and events[-1].response.usage.total_tokens == want.usage.total_tokens
    assert [r["path"] for r in through] == ["/v1/responses"] * 2
    assert all(r["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}" for r in through)


def test_no_or_a_wrong_gateway_key_reaches_nothing(env, through_proxy):
    provider = env["provider"]
    provider.requests.clear()
    for key in (None, "not-a-consumer-key"):
        with pytest.raises(openai.AuthenticationError):
            agent(env, key).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert provider.requests == []
