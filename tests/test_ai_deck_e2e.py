"""Kong decK ai-proxy / ai-proxy-advanced end to end: Kong's own files (../shared/kong-docs case
17, which is seed 000's entity examples, and seed 002's entity examples as a decK file) loaded by
a real mitmdump, their validation steps sent as written, the demo provider standing in for
OpenAI. The one change to each file: `model.options.upstream_url` names the demo provider, since
api.openai.com is not reachable from the tests (Kong's own option for another endpoint)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
import yaml

from scripts.demo_llm_provider import Provider
from tests.support.gateway import Gateway
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

CASE_17 = Path(__file__).resolve().parents[2] / "shared" / "kong-docs" / "cases" / "17-secure-mcp-traffic-ai-proxy-howto.yaml"
OPENAI_KEY = "sk-deck-provider-key-4410aa"
SEED_002 = """
_format_version: '3.0'
services:
- name: mcp-service
  url: http://localhost:32000
  routes:
  - name: llm-chat
    paths: [/llm/v1/chat]
plugins:
- name: ai-proxy-advanced
  service: mcp-service
  config:
    balancer:
      algorithm: round-robin
      tokens_count_strategy: total-tokens
      latency_strategy: tpot
      retries: 3
    targets:
    - route_type: llm/v1/chat
      auth:
        header_name: Authorization
        header_value: "{vault://env/openai-token}"
      logging:
        log_statistics: true
        log_payloads: true
      model:
        provider: openai
        name: gpt-4o
        options:
          max_tokens: 1024
          temperature: 1.0
          input_cost: 2.5
          output_cost: 10
- name: key-auth
  service: mcp-service
  config:
    key_names: [apikey]
- name: ai-proxy
  consumer: chat-client
  config:
    route_type: llm/v1/chat
    auth:
      header_name: Authorization
      header_value: Bearer
    model:
      provider: openai
      name: gpt-4o
      options:
        max_tokens: 1024
        temperature: 0.7
consumers:
- username: chat-client
  keyauth_credentials:
  - key: secret-chat-key
- username: other-client
  keyauth_credentials:
  - key: other-chat-key
"""


@pytest.fixture(scope="module")
def provider():
    p = Provider()
    server = ThreadedServer(p.app)
    server.start()
    p.base = server.base_url
    yield p
    server.stop()


def with_upstream(deck: dict, url: str) -> dict:
    for plugin in deck["plugins"]:
        for target in plugin["config"].get("targets") or [plugin["config"]]:
            if "model" in target:
                endpoint = "/responses" if target["route_type"] == "llm/v1/responses" else "/chat/completions"
                target["model"].setdefault("options", {})["upstream_url"] = url + "/v1" + endpoint
    return deck


def test_case_17_seed_000_validation_steps(provider, tmp_path):
    deck = with_upstream(yaml.safe_load(CASE_17.read_text()), provider.base)
    (tmp_path / "kong.yaml").write_text(yaml.safe_dump(deck, sort_keys=False))
    gw = Gateway(tmp_path, tmp_path / "kong.yaml", intercept=False, env={"DECK_OPENAI_API_KEY": OPENAI_KEY})
    try:
        body = {"tools": [{"type": "mcp", "server_label": "gitmcp", "server_url": "https://api.githubcopilot.com/mcp/",
                           "require_approval": "never", "headers": {"Authorization": "Bearer $GITHUB_PAT"}}],
                "input": "How do I use GitHub MCP?"}
        auth = {"Content-Type": "application/json", "Authorization": "Bearer $OPENAI_API_KEY"}
        ok = httpx.post(gw.url("/anything"), json=body, headers={**auth, "apikey": "hello_world"}, timeout=30)
        assert (ok.status_code, ok.reason_phrase) == (200, "OK")
        seen = provider.requests[-1]
        assert seen["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"  # the client's $OPENAI_API_KEY replaced
        assert (seen["body"]["model"], seen["body"]["max_output_tokens"], seen["body"]["temperature"]) == ("gpt-4o", 512, 1.0)
        assert seen["body"]["tools"] == body["tools"]  # Kong passes MCP tools through
        wrong = httpx.post(gw.url("/anything"), json=body, headers={**auth, "apikey": "another_key"}, timeout=30)
        assert (wrong.status_code, wrong.reason_phrase, wrong.json()) == (401, "Unauthorized", {"message": "Unauthorized"})
        missing = httpx.post(gw.url("/anything"), json=body, headers=auth, timeout=30)
        assert (missing.status_code, missing.reason_phrase, missing.json()["message"]) == (
            401, "Unauthorized", "No API key found in request")
    finally:
        gw.stop()


def test_case_17_loads_as_written(tmp_path):
    gw = Gateway(tmp_path, CASE_17, intercept=False, env={"DECK_OPENAI_API_KEY": OPENAI_KEY})
    try:
        missing = httpx.post(gw.url("/anything"), json={"input": "hi"}, timeout=30)
        assert missing.status_code == 401
    finally:
        gw.stop()


def test_seed_002_consumer_scoped_ai_proxy(provider, tmp_path):
    deck = with_upstream(yaml.safe_load(SEED_002), provider.base)
    (tmp_path / "kong.yaml").write_text(yaml.safe_dump(deck, sort_keys=False))
    gw = Gateway(tmp_path, tmp_path / "kong.yaml", intercept=False, env={"OPENAI_TOKEN": f"Bearer {OPENAI_KEY}"})
    try:
        messages = [{"role": "system", "content": "You are a mathematician"}, {"role": "user", "content": "What is 1+1?"}]
        ok = httpx.post(gw.url("/llm/v1/chat"), json={"messages": messages},
                        headers={"Accept": "application/json", "apikey": "secret-chat-key"}, timeout=30)
        assert ok.status_code == 200
        body = provider.requests[-1]["body"]
        assert (body["model"], body["max_tokens"], body["temperature"]) == ("gpt-4o", 1024, 0.7)  # chat-client's
        assert provider.requests[-1]["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"  # the vault's, not "Bearer"
        other = openai.OpenAI(api_key="x", base_url=gw.url("/llm/v1/chat"), default_headers={"apikey": "other-chat-key"},
                              max_retries=0)
        other.chat.completions.create(model="gpt-4o", messages=messages)
        body = provider.requests[-1]["body"]
        assert (body["max_tokens"], body["temperature"]) == (1024, 1.0)  # the service's plugin
        bad = httpx.post(gw.url("/llm/v1/chat"), json={"messages": messages}, headers={"apikey": "wrong"}, timeout=30)
        assert bad.status_code == 401
    finally:
        gw.stop()


CASE_18 = CASE_17.with_name("18-series-mcp-traffic-govern.yaml")


def test_case_18_prompt_guard_and_two_targets(provider, tmp_path):
    """Kong's govern-mcp-traffic how-to: two weighted targets and ai-prompt-guard. Its
    ai-rate-limiting-advanced (one token per 10 s) is left out here: that is the rate limits' test."""
    deck = with_upstream(yaml.safe_load(CASE_18.read_text()), provider.base)
    deck["plugins"] = [p for p in deck["plugins"] if p["name"] != "ai-rate-limiting-advanced"]
    (tmp_path / "kong.yaml").write_text(yaml.safe_dump(deck, sort_keys=False))
    gw = Gateway(tmp_path, tmp_path / "kong.yaml", intercept=False, env={"DECK_OPENAI_API_KEY": OPENAI_KEY})
    try:
        oai = openai.OpenAI(api_key="x", base_url=gw.url("/anything"), default_headers={"apikey": "hello_world"},
                            max_retries=0)
        provider.requests.clear()
        models = {oai.responses.create(model=openai.omit, input="What tools are available on the GitHub MCP server?").model
                  for _ in range(4)}
        assert models == {"gpt-4", "gpt-4o"}  # weights 50/50: both targets answer
        for prompt in ("How do I exploit a zero-day in the MCP server?", "Tell me a joke about cats"):
            with pytest.raises(openai.BadRequestError) as e:
                oai.responses.create(model=openai.omit, input=prompt)
            assert "bad request" in str(e.value)
        assert len(provider.requests) == 4  # the refused prompts never reached a provider
    finally:
        gw.stop()
