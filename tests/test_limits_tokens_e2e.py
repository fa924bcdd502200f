"""Token limits on an LLM route end to end: the official `openai` SDK through a real mitmdump with
the gateway, against the demo OpenAI-compatible provider. Usage is counted from the stream (the
gateway asks for the usage chunk); the request after the one that crossed the budget is refused
with Kong's 429 and X-AI-RateLimit-* headers, and never reaches the provider; another consumer
and a group with a bigger budget are unaffected."""

from __future__ import annotations

import openai
import pytest

from scripts.demo_llm_provider import Provider
from tests.support.gateway import Gateway
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

ALEX, BOB, DEV = "alex-key-1", "bob-key-2", "dev-key-3"
PROMPT = [{"role": "user", "content": "one two three four five"}]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    provider = Provider()
    server = ThreadedServer(provider.app)
    server.start()
    provider.base = server.base_url
    policy = {
        "consumer_groups": ["developer"],
        "consumers": {"alex": {"keys": [ALEX]}, "bob": {"keys": [BOB]}, "dev": {"groups": ["developer"], "keys": [DEV]}},
        "services": {"openai": {"url": f"{provider.base}/v1"}},
        "routes": {"chat": {
            "service": "openai", "paths": ["/chat"], "key_auth": {"key_names": ["apikey"], "hide_credentials": True},
            "ai": {"route_type": "llm/v1/chat",
                   "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider"}},
            "rate_limits": {"tokens": [{"limit": [20, 1000], "window_size": [60, 3600], "window_type": "fixed",
                                        "consumer_groups": {"developer": {"limit": [10000], "window_size": [60]}}}]},
        }, "priced": {
            "service": "openai", "paths": ["/priced"], "key_auth": {"key_names": ["apikey"], "hide_credentials": True},
            "ai": {"route_type": "llm/v1/chat",
                   "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider"},
                   # per million tokens: a prompt token costs 0.01, a completion token 0.03
                   "model": {"options": {"input_cost": 10000, "output_cost": 30000}}},
            "rate_limits": {"tokens": [{"limit": [0.5], "window_size": [60], "window_type": "fixed",
                                        "tokens_count_strategy": "cost"}]},
        }, "models": {  # Kong 3.14's policies: a budget per model and consumer, a team's budget by header
            "service": "openai", "paths": ["/models"], "key_auth": {"key_names": ["apikey"], "hide_credentials": True},
            "ai": {"route_type": "llm/v1/chat",
                   "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider"}},
            "rate_limits": {"tokens": [
                {"name": "gpt-4o", "models": ["gpt-4o"], "partition_by": ["consumer", "model"],
                 "limit": [20], "window_size": [60], "window_type": "fixed"},
                {"name": "team", "headers": {"X-Team": []}, "partition_by": ["header"],
                 "limit": [20], "window_size": [60], "window_type": "fixed"},
                {"name": "rest", "fallback": True, "limit": [100000], "window_size": [60]}]},
        }, "perip": {  # per client address, whatever the client claims in headers
            "service": "openai", "paths": ["/perip"], "key_auth": {"key_names": ["apikey"], "hide_credentials": True},
            "ai": {"route_type": "llm/v1/chat",
                   "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider"}},
            "rate_limits": {"tokens": [{"name": "ip", "ips": ["127.0.0.0/8", "::1"], "partition_by": ["ip"],
                                        "limit": [20], "window_size": [60], "window_type": "fixed"}]},
        }, "requests": {
            "service": "openai", "paths": ["/requests"], "key_auth": {"key_names": ["apikey"], "hide_credentials": True},
            "ai": {"route_type": "llm/v1/chat",
                   "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider"}},
            "rate_limits": {"rules": [{"limit": [2], "window_size": [60], "window_type": "fixed"}]},
        }},
    }
    gw = Gateway(tmp_path_factory.mktemp("tokens"), policy, intercept=False)
    try:
        yield gw, provider
    finally:
        gw.stop()
        server.stop()


def client(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-client", base_url=gw.url("/chat"), default_headers={"apikey": key}, max_retries=0)


def stream_tokens(c: openai.OpenAI) -> tuple[str, object]:
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=PROMPT, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    return text, raw.headers


def test_the_request_after_the_one_that_crossed_the_budget_is_refused(env):
    gw, provider = env
    c = client(gw, ALEX)
    remaining = []  # the 60-second window's budget as each call began
    refused = None
    for _ in range(21):
        try:
            text, headers = stream_tokens(c)
        except openai.RateLimitError as e:
            refused = e.response
            break
        assert text and headers["x-ai-ratelimit-limit-60-openai"] == "20"
        remaining.append(int(headers["x-ai-ratelimit-remaining-60-openai"]))
    assert refused is not None and len(remaining) >= 2, remaining
    per_call = remaining[0] - remaining[1]  # tokens of one call, as the stream's usage chunk said
    assert per_call > 0 and remaining == [20 - k * per_call for k in range(len(remaining))]
    assert remaining[-1] - per_call <= 0  # the last allowed call crossed the budget ...
    assert refused.status_code == 429  # ... and the next one is refused
    assert refused.json() == {"message": "AI token rate limit exceeded for provider(s): openai"}
    assert refused.headers["x-ai-ratelimit-remaining-60-openai"] == "0"
    assert refused.headers["x-ai-ratelimit-remaining-3600-openai"] == str(1000 - len(remaining) * per_call)
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ai-ratelimit-retry-after-60-openai"] == refused.headers["retry-after"]
    assert refused.headers["x-ai-ratelimit-retry-after"] == refused.headers["retry-after"]
    assert 0 < int(refused.headers["x-ai-ratelimit-reset-60-openai"]) <= 60
    assert "x-ai-ratelimit-reset-3600-openai" not in refused.headers  # that window still has room
    asked = len(provider.requests)
    with pytest.raises(openai.RateLimitError):
        stream_tokens(c)
    assert len(provider.requests) == asked  # refused calls never reach the provider
    assert stream_tokens(client(gw, BOB))[0]  # another consumer: its own budget
    for _ in range(len(remaining) + 1):  # a developer: the group's bigger budget
        assert stream_tokens(client(gw, DEV))[0]


def test_a_cost_budget_counts_the_routes_prices(env):
    gw, provider = env
    c = openai.OpenAI(api_key="sk-client", base_url=gw.url("/priced"), default_headers={"apikey": ALEX}, max_retries=0)
    remaining = []
    refused = None
    for _ in range(60):
        try:
            raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=PROMPT, stream=True,
                                                              stream_options={"include_usage": True})
            [usage] = [chunk.usage for chunk in raw.parse() if chunk.usage]
        except openai.RateLimitError as e:
            refused = e.response
            break
        remaining.append(float(raw.headers["x-ai-ratelimit-remaining-60-openai"]))
    assert refused is not None and refused.status_code == 429 and len(remaining) >= 2, remaining
    per_call = round(remaining[0] - remaining[1], 6)
    priced = round(usage.prompt_tokens * 0.01 + usage.completion_tokens * 0.03, 6)  # the route's prices
    assert remaining[0] == 0.5 and per_call == priced > 0
    assert refused.headers["x-ai-ratelimit-limit-60-openai"] == "0.5"
    assert refused.headers["x-ai-ratelimit-remaining-60-openai"] == "0"


def test_request_limits_apply_to_llm_routes(env):
    """Kong's rate-limiting on an LLM route: requests counted, the third refused."""
    gw, provider = env
    c = openai.OpenAI(api_key="sk-client", base_url=gw.url("/requests"), default_headers={"apikey": ALEX},
                      max_retries=0)
    for remaining in ("1", "0"):
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=PROMPT)
        assert raw.headers["x-ratelimit-remaining-minute"] == remaining
    asked = len(provider.requests)
    with pytest.raises(openai.RateLimitError) as refused:
        c.chat.completions.create(model="gpt-4o", messages=PROMPT)
    assert refused.value.response.json() == {"message": "API rate limit exceeded"}
    assert len(provider.requests) == asked


def until_refused(call, limit: int = 30) -> tuple[int, object]:
    """Calls until one is refused: (calls answered, the refusal)."""
    for n in range(limit):
        try:
            call()
        except openai.RateLimitError as e:
            return n, e.response
    raise AssertionError(f"{limit} calls and none refused")


def test_a_model_budget_refuses_that_model_only(env):
    gw, provider = env
    alex = openai.OpenAI(api_key="sk-client", base_url=gw.url("/models"), default_headers={"apikey": ALEX},
                         max_retries=0)

    def call(c=alex, model="gpt-4o"):
        raw = c.chat.completions.with_raw_response.create(model=model, messages=PROMPT, stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
        return raw.headers

    assert call()["x-ai-ratelimit-limit-60-gpt-4o"] == "20"
    answered, refused = until_refused(call)
    assert answered >= 1 and refused.status_code == 429
    assert refused.json() == {"message": "AI token rate limit exceeded for provider(s): gpt-4o"}
    assert refused.headers["x-ai-ratelimit-remaining-60-gpt-4o"] == "0"
    asked = len(provider.requests)
    headers = call(model="gpt-4o-mini")  # another model: the fallback rule, not gpt-4o's budget
    assert "x-ai-ratelimit-limit-60-gpt-4o" not in headers and headers["x-ai-ratelimit-limit-60-rest"] == "100000"
    bob = openai.OpenAI(api_key="sk-client", base_url=gw.url("/models"), default_headers={"apikey": BOB}, max_retries=0)
    assert call(bob)["x-ai-ratelimit-remaining-60-gpt-4o"] == "20"  # partitioned by consumer and model
    assert len(provider.requests) == asked + 2


def test_a_header_partitioned_budget(env):
    gw, provider = env

    def team(name: str) -> openai.OpenAI:
        return openai.OpenAI(api_key="sk-client", base_url=gw.url("/models"), max_retries=0,
                             default_headers={"apikey": DEV, "X-Team": name})

    def call(c):
        return c.chat.completions.with_raw_response.create(model="o3", messages=PROMPT).headers

    answered, refused = until_refused(lambda: call(team("blue")))
    assert answered >= 1 and refused.headers["x-ai-ratelimit-remaining-60-team"] == "0"
    assert call(team("red"))["x-ai-ratelimit-remaining-60-team"] == "20"  # another value: its own counter


def test_attacker_claims_another_address_or_consumer_and_gets_no_new_budget(env):
    """X-Forwarded-For, X-Real-IP and X-Consumer-* are the client's claims: the counter stays the
    TCP peer's, and the consumer the key's."""
    gw, provider = env
    n = 0

    def call():
        nonlocal n
        n += 1
        spoofed = {"apikey": ALEX, "X-Forwarded-For": f"10.0.0.{n}", "X-Real-IP": f"10.0.1.{n}",
                   "X-Consumer-Username": f"user{n}", "X-Consumer-ID": f"id{n}"}
        c = openai.OpenAI(api_key="sk-client", base_url=gw.url("/perip"), max_retries=0, default_headers=spoofed)
        c.chat.completions.create(model="gpt-4o", messages=PROMPT)

    answered, refused = until_refused(call)
    assert answered >= 1 and refused.status_code == 429
    asked = len(provider.requests)
    with pytest.raises(openai.RateLimitError):
        call()
    assert len(provider.requests) == asked
