"""decK ai-proxy / ai-proxy-advanced -> the native ai: settings (policy/deck_ai.py): what maps, and
what is refused with a reason instead of being half applied."""

from __future__ import annotations

import copy

import pytest

from mcpgw.policy.deck import translate_deck
from mcpgw.policy.loader import PolicyError
from mcpgw.policy.models import Policy


def deck(*plugins: dict, consumers: list | None = None) -> dict:
    return {"_format_version": "3.0",
            "consumers": consumers or [{"username": "chat-client", "keyauth_credentials": [{"key": "k1-secret-chat"}]}],
            "services": [{"name": "svc", "url": "http://localhost:32000",
                          "routes": [{"name": "r", "paths": ["/llm"]}]}],
            "plugins": copy.deepcopy(list(plugins))}


def target(**extra) -> dict:
    return {"route_type": "llm/v1/chat", "auth": {"header_name": "Authorization", "header_value": "Bearer sk-x"},
            "model": {"provider": "openai", "name": "gpt-4o", "options": {"max_tokens": 512}}, **extra}


def translate(doc: dict) -> Policy:
    return Policy.model_validate(translate_deck(doc, "kong.yaml", env={}))


def problems(doc: dict) -> list[str]:
    with pytest.raises(PolicyError) as refused:
        translate_deck(doc, "kong.yaml", env={})
    return refused.value.problems


def test_ai_proxy_advanced_becomes_an_llm_route_with_the_providers_url():
    policy = translate(deck({"name": "ai-proxy-advanced", "config": {"targets": [target()], "balancer": {"retries": 3}}}))
    route = policy.routes["r"]
    assert policy.services[route.service].url == "https://api.openai.com/v1"
    assert route.ai.route_type == "llm/v1/chat" and route.ai.model.name == "gpt-4o"
    assert route.ai.model.options.max_tokens == 512 and route.ai.auth.header_value.reveal() == "Bearer sk-x"
    assert route.ai.mcp.allow_unknown_servers  # Kong passes MCP tools through


def test_upstream_url_and_consumer_scoped_overrides():
    options = {"max_tokens": 9, "upstream_url": "http://127.0.0.1:8090/v1/chat/completions"}
    personal = {"name": "ai-proxy", "consumer": "chat-client",
                "config": {"route_type": "llm/v1/chat", "model": {"name": "gpt-4o", "options": {"max_tokens": 1024, "temperature": 0.7}}}}
    policy = translate(deck({"name": "ai-proxy", "config": target(model={"name": "gpt-4o", "options": options})}, personal))
    route = policy.routes["r"]
    assert policy.services[route.service].url == "http://127.0.0.1:8090/v1"
    [(who, override)] = route.ai.consumers.items()
    assert (override.options.max_tokens, override.options.temperature) == (1024, 0.7)


@pytest.mark.parametrize(("plugin", "expected"), [
    ({"name": "ai-proxy-advanced", "config": {"targets": [target(), target()], "balancer": {"algorithm": "semantic"}}},
     "algorithm 'semantic' is not supported"),
    ({"name": "ai-proxy-advanced", "config": {"targets": [target()], "balancer": {"failover_criteria": ["invalid_header"]}}},
     "failover_criteria: only error, timeout"),
    ({"name": "ai-proxy-advanced", "config": {"targets": [target(), target()], "balancer": {"algorithm": "semantic"}}},
     "algorithm 'semantic' is not supported (round-robin, least-connections, lowest-latency, lowest-usage, "
     "consistent-hashing, priority)"),
    ({"name": "ai-proxy-advanced", "config": {"targets": [target(), target(route_type="llm/v1/responses")]}},
     "every target needs the same route_type"),
    ({"name": "ai-proxy", "config": target(route_type="llm/v1/embeddings")}, "route_type 'llm/v1/embeddings' is not supported"),
    ({"name": "ai-proxy", "config": target(model={"provider": "openai", "options": {"upstream_url": "http://x/v1/other"}})},
     "upstream_url must end with /chat/completions"),
    ({"name": "ai-proxy", "config": target(model={"provider": "mistral", "name": "m"})}, "needs model.options.upstream_url"),
    ({"name": "ai-proxy", "config": target(auth={"header_name": "Authorization", "header_value": "x", "param_location": "body"})},
     "only param_location query"),
    ({"name": "ai-proxy", "config": {**target(), "genai_category": "image/generation"}}, "option not supported"),
])
def test_refused_with_a_reason(plugin, expected):
    found = problems(deck(plugin))
    assert any(expected in p for p in found), found


def test_a_consumer_scoped_ai_proxy_alone_is_refused():
    personal = {"name": "ai-proxy", "consumer": "chat-client", "config": target()}
    assert any("scoped to a consumer" in p for p in problems(deck(personal)))


def test_several_targets_become_a_balanced_route():
    second = target(auth={"header_name": "api-key", "header_value": "azure-key"},
                    model={"provider": "openai", "name": "gpt-4o-mini",
                           "options": {"upstream_url": "https://azure.example.com/openai/v1/chat/completions"}},
                    weight=300)
    policy = translate(deck({"name": "ai-proxy-advanced", "config": {
        "targets": [target(weight=100), second], "balancer": {"algorithm": "round-robin", "retries": 3, "connect_timeout": 2000}}}))
    ai = policy.routes["r"].ai
    assert [(x.url, x.weight, x.model.name) for x in ai.targets] == [
        ("https://api.openai.com/v1", 100, "gpt-4o"), ("https://azure.example.com/openai/v1", 300, "gpt-4o-mini")]
    assert ai.targets[1].auth.header_name == "api-key" and ai.auth is None
    assert (ai.balancer.algorithm, ai.balancer.retries, ai.balancer.connect_timeout) == ("round-robin", 3, 2.0)


def test_lowest_latency_and_status_criteria_are_translated():
    policy = translate(deck({"name": "ai-proxy-advanced", "config": {"targets": [target(), target()], "balancer": {
        "algorithm": "lowest-latency", "latency_strategy": "e2e", "retries": 2,
        "failover_criteria": ["error", "timeout", "http_429", "http_503", "non_idempotent"]}}}))
    b = policy.routes["r"].ai.balancer
    assert (b.algorithm, b.latency_strategy, b.retries) == ("lowest-latency", "e2e", 2)
    assert b.retry_statuses == {429, 503} and "non_idempotent" in b.failover_criteria


@pytest.mark.parametrize(("balancer", "expected"), [
    ({"algorithm": "lowest-usage", "tokens_count_strategy": "prompt-tokens"}, ("lowest-usage", "tokens_count_strategy", "prompt-tokens")),
    ({"algorithm": "consistent-hashing", "hash_on_header": "X-Hashing-Header"}, ("consistent-hashing", "hash_on_header", "X-Hashing-Header")),
    ({"algorithm": "priority"}, ("priority", "hash_on_header", "X-Kong-LLM-Request-ID")),
])
def test_kongs_other_algorithms_are_translated(balancer, expected):
    policy = translate(deck({"name": "ai-proxy-advanced", "config": {"targets": [target(weight=70), target(weight=25)],
                                                                      "balancer": balancer}}))
    b = policy.routes["r"].ai.balancer
    assert (b.algorithm, getattr(b, expected[1])) == (expected[0], expected[2])
