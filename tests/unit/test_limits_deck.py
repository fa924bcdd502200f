"""Kong's rate-limiting and rate-limiting-advanced in decK files: Kong's doc cases 29 and 30
load, translate to the native rate_limits, and refuse what they should; a translated limit
answers through the real pipeline as the pages say."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from mitmproxy import http
from mitmproxy.test import tflow

from mcpgw import pipeline
from mcpgw.context import FlowContext
from mcpgw.limits import backend
from mcpgw.policy.deck import translate_deck
from mcpgw.policy.loader import PolicyError
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.routing import RouteTable

CASES = Path(__file__).resolve().parents[3] / "shared" / "kong-docs" / "cases"
CASE_29 = CASES / "29-rate-limiting-local-on-mcp.yaml"
CASE_30 = CASES / "30-rate-limiting-advanced-sliding-on-mcp.yaml"

needs_cases = pytest.mark.skipif(not CASE_29.exists(), reason="Kong doc cases not on this machine")


def translate(doc: dict) -> dict:
    return translate_deck(copy.deepcopy(doc), "kong.yaml", env={})


def case(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def with_plugin(doc: dict, plugin: dict) -> dict:
    doc = copy.deepcopy(doc)
    doc["plugins"] = [p for p in doc["plugins"] if not p["name"].startswith("rate-limiting")] + [plugin]
    return doc


@needs_cases
def test_case_29_rate_limiting_local_is_fixed_windows_per_consumer():
    native = translate(case(CASE_29))
    assert native["routes"]["mcp-route"]["rate_limits"] == {
        "strategy": "local",
        "rules": [{"limit": [5, 1000], "window_size": [1, 3600], "window_type": "fixed", "identifier": "consumer"}]}
    Policy.model_validate(native)


@needs_cases
def test_case_30_rate_limiting_advanced_sliding_with_namespace():
    native = translate(case(CASE_30))
    assert native["routes"]["mcp-route"]["rate_limits"] == {
        "strategy": "local",
        "rules": [{"limit": [100], "window_size": [3600], "window_type": "sliding", "count_refused": True,
                   "namespace": "my-namespace", "identifier": "consumer"}]}


@needs_cases
def test_redis_settings_become_the_gateway_state_and_secrets_stay_references(monkeypatch):
    monkeypatch.setenv("REDIS_PASSWORD", "pw")
    plugin = {"name": "rate-limiting-advanced", "route": "mcp-route", "config": {
        "limit": [10], "window_size": [60], "strategy": "redis", "sync_rate": 0, "disable_penalty": True,
        "redis": {"host": "redis.internal", "port": 6380, "database": 2, "password": "{vault://env/REDIS_PASSWORD}",
                  "timeout": 1500, "ssl": True, "server_name": "cache.internal"}}}
    native = translate_deck(with_plugin(case(CASE_30), plugin), "kong.yaml", env={}, secret_references=True)
    assert native["gateway"]["state"]["redis"]["password"] == "{vault://env/REDIS_PASSWORD}"  # resolved at load only
    assert native["gateway"]["state"]["redis"]["server_name"] == "cache.internal"  # TLS: the name checked
    assert native["gateway"]["state"]["redis"]["host"] == "redis.internal"
    assert native["gateway"]["state"]["redis"]["timeout"] == 1.5
    assert native["routes"]["mcp-route"]["rate_limits"]["strategy"] == "redis"
    assert native["routes"]["mcp-route"]["rate_limits"]["rules"][0]["count_refused"] is False


@needs_cases
@pytest.mark.parametrize("config, expected", [
    ({"limit": [1], "window_size": [60], "strategy": "cluster"}, "'cluster' is not supported"),
    ({"limit": [1], "window_size": [60], "identifier": "consumer-group"}, "'consumer-group' is not supported"),
    ({"limit": [1], "window_size": [60], "strategy": "redis", "redis": {"sentinel_nodes": [{"host": "s"}]}},
     "Sentinel and Cluster are not supported"),
    ({"limit": [1], "window_size": [60], "retry_after_jitter_max": 5}, "only 0 is supported"),
    ({"limit": [1, 2], "window_size": [60]}, "same length"),
])
def test_refusals(config, expected):
    doc = with_plugin(case(CASE_30), {"name": "rate-limiting-advanced", "route": "mcp-route", "config": config})
    with pytest.raises(PolicyError) as refused:
        translate(doc)
    assert any(expected in p for p in refused.value.problems), refused.value.problems


@needs_cases
def test_two_plugins_naming_different_redis_servers_are_refused():
    doc = case(CASE_29)
    doc["services"].append({"name": "other", "url": "http://127.0.0.1:9", "routes": [{"name": "r2", "paths": ["/b"]}]})
    doc["plugins"] = [p for p in doc["plugins"] if p["name"] != "rate-limiting"] + [
        {"name": "rate-limiting", "route": "mcp-route", "config": {"minute": 1, "policy": "redis", "redis": {"host": "a"}}},
        {"name": "rate-limiting", "route": "r2", "config": {"minute": 1, "policy": "redis", "redis": {"host": "b"}}}]
    with pytest.raises(PolicyError) as refused:
        translate(doc)
    assert any("names another Redis" in p for p in refused.value.problems)


async def run(policy: Policy, key: str) -> http.Response | None:
    snap = Snapshot(policy, RouteTable(policy), "test", 1, "test", ())
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t", "arguments": {}}})
    fields = [(b"host", b"localhost:8000"), (b"content-type", b"application/json"),
              (b"accept", b"application/json, text/event-stream"), (b"apikey", key.encode())]
    flow = tflow.tflow(req=http.Request.make("POST", "http://localhost:8000/mcp", body.encode(), http.Headers(fields)))
    ctx = FlowContext(snap, "gateway", snap.routes.match_gateway("/mcp"), frozenset({"localhost"}), "localhost:8000", "http")
    answer = await pipeline.run(pipeline.HEADER_PHASES + pipeline.REQUEST_PHASES, ctx, flow)
    assert answer is not None or ctx.upstream_set
    return answer


@needs_cases
async def test_case_29_answers_the_sixth_request_in_a_second_with_kongs_429(monkeypatch):
    from mcpgw.limits.counters import LocalCounters

    monkeypatch.setattr(backend, "local", LocalCounters(clock=lambda: 1_080_000.5))  # one second, held still
    policy = Policy.model_validate(translate(case(CASE_29)))
    answers = [await run(policy, "dev-key") for _ in range(6)]
    assert answers[:5] == [None] * 5  # forwarded
    refused = answers[5]
    assert refused.status_code == 429 and json.loads(refused.content) == {"message": "API rate limit exceeded"}
    assert refused.headers["X-RateLimit-Limit-Second"] == "5" and refused.headers["X-RateLimit-Remaining-Second"] == "0"
    assert refused.headers["X-RateLimit-Remaining-Hour"] == "995"
    assert refused.headers["Retry-After"] == "1"
    assert await run(policy, "admin-key") is None  # another consumer: its own counter


SEED_002_LIMITS = """
name: ai-rate-limiting-advanced
service: mcp-service
config:
  strategy: local
  window_type: fixed
  llm_providers:
    - name: openai
      window_size:
        - 60
        - 3600
      limit:
        - 10000
        - 1000000
"""


def test_seed_002_ai_rate_limiting_advanced_loads_as_written(monkeypatch):
    from tests.test_ai_deck_e2e import SEED_002

    monkeypatch.setenv("OPENAI_TOKEN", "Bearer sk-test")
    doc = yaml.safe_load(SEED_002)
    doc["plugins"].append(yaml.safe_load(SEED_002_LIMITS))  # the seed's entity, as its page writes it
    native = translate(doc)
    assert native["routes"]["llm-chat"]["rate_limits"] == {"strategy": "local", "rules": [], "tokens": [
        {"provider": "openai", "limit": [10000, 1000000], "window_size": [60, 3600], "window_type": "fixed",
         "tokens_count_strategy": "total_tokens"}]}
    Policy.model_validate(native)


@pytest.mark.parametrize("config, expected", [
    ({"strategy": "local"}, "needs llm_providers"),
    ({"llm_providers": [{"name": "openai", "window_size": [60], "limit": [1]}], "tokens_count_strategy": "words"},
     "'words' is not supported"),
])
def test_ai_rate_limiting_refusals(monkeypatch, config, expected):
    from tests.test_ai_deck_e2e import SEED_002

    monkeypatch.setenv("OPENAI_TOKEN", "Bearer sk-test")
    doc = yaml.safe_load(SEED_002)
    doc["plugins"].append({"name": "ai-rate-limiting-advanced", "service": "mcp-service", "config": config})
    with pytest.raises(PolicyError) as refused:
        translate(doc)
    assert any(expected in p for p in refused.value.problems), refused.value.problems


CASE_18 = CASES / "18-series-mcp-traffic-govern.yaml"


@needs_cases
def test_case_18_global_ai_rate_limiting_applies_to_the_llm_route(monkeypatch):
    """Case 18's ai-rate-limiting-advanced (global, 1 token per 10 s) as written; the case's
    ai-prompt-guard and second balancer target are other concerns, taken out here."""
    monkeypatch.setenv("DECK_OPENAI_API_KEY", "sk-test")
    doc = case(CASE_18)
    doc["plugins"] = [p for p in doc["plugins"] if p["name"] != "ai-prompt-guard"]
    doc["plugins"][0]["config"]["targets"] = doc["plugins"][0]["config"]["targets"][:1]
    native = translate_deck(doc, "kong.yaml", env={"DECK_OPENAI_API_KEY": "sk-test"})
    assert native["routes"]["example-route"]["rate_limits"] == {"strategy": "local", "rules": [], "tokens": [
        {"provider": "openai", "limit": [1], "window_size": [10], "window_type": "sliding",
         "tokens_count_strategy": "total_tokens"}]}


@needs_cases
def test_consumer_group_scoped_instances_become_group_overrides():
    doc = case(CASE_30)
    doc["plugins"].append({"name": "rate-limiting-advanced", "route": "mcp-route", "consumer_group": "admin",
                           "config": {"limit": [1000], "window_size": [3600], "window_type": "sliding",
                                      "namespace": "my-namespace"}})
    rule = translate(doc)["routes"]["mcp-route"]["rate_limits"]["rules"][0]
    assert rule["consumer_groups"] == {"admin": {"limit": [1000], "window_size": [3600]}}
    doc["plugins"][-1]["config"]["window_type"] = "fixed"
    with pytest.raises(PolicyError) as refused:
        translate(doc)
    assert any("may change its windows only" in p for p in refused.value.problems)
    doc["plugins"][-1]["config"]["window_type"] = "sliding"
    doc["plugins"].append({"name": "rate-limiting-advanced", "route": "mcp-route", "consumer": "dev",
                           "config": {"limit": [5], "window_size": [3600]}})
    rule = translate(doc)["routes"]["mcp-route"]["rate_limits"]["rules"][0]
    assert rule["consumers"] == {"dev": {"limit": [5], "window_size": [3600]}}


@needs_cases
async def test_rate_limiting_scoped_to_a_consumer_group_or_consumer_overrides_the_routes(monkeypatch):
    """Kong's rate-limiting (not -advanced) on a consumer group or a consumer beside the route's:
    the most specific instance's windows apply to its members."""
    from mcpgw.limits.counters import LocalCounters

    monkeypatch.setattr(backend, "local", LocalCounters(clock=lambda: 1_080_000.5))
    doc = case(CASE_29)
    doc.setdefault("consumer_groups", []).append({"name": "gold"})
    doc["plugins"] += [
        {"name": "rate-limiting", "route": "mcp-route", "consumer_group": "gold", "config": {"second": 50, "hour": 9000}},
        {"name": "rate-limiting", "route": "mcp-route", "consumer": "dev", "config": {"second": 1}}]
    rule = translate(doc)["routes"]["mcp-route"]["rate_limits"]["rules"][0]
    assert rule["consumer_groups"] == {"gold": {"limit": [50, 9000], "window_size": [1, 3600]}}
    assert rule["consumers"] == {"dev": {"limit": [1], "window_size": [1]}}
    policy = Policy.model_validate(translate(doc))
    first, second = await run(policy, "dev-key"), await run(policy, "dev-key")
    assert first is None and second.status_code == 429 and second.headers["X-RateLimit-Limit-Second"] == "1"
    doc["plugins"][-1]["config"]["limit_by"] = "ip"
    with pytest.raises(PolicyError) as refused:
        translate(doc)
    assert any("may change its windows only" in p for p in refused.value.problems)


@needs_cases
async def test_consumer_override_comes_before_the_group_override(monkeypatch):
    from mcpgw.limits.counters import LocalCounters

    monkeypatch.setattr(backend, "local", LocalCounters(clock=lambda: 1_080_000.0))
    doc = case(CASE_30)
    doc["plugins"] += [
        {"name": "rate-limiting-advanced", "route": "mcp-route", "consumer_group": "dev",
         "config": {"limit": [1000], "window_size": [3600]}},
        {"name": "rate-limiting-advanced", "route": "mcp-route", "consumer": "dev",
         "config": {"limit": [2], "window_size": [3600]}}]
    policy = Policy.model_validate(translate(doc))
    answers = [await run(policy, "dev-key") for _ in range(3)]
    assert answers[:2] == [None, None] and answers[2].status_code == 429
    assert answers[2].headers["X-RateLimit-Limit-Hour"] == "2"


def test_an_override_for_an_undeclared_consumer_is_refused():
    policy = {"services": {"s": {"url": "http://127.0.0.1:9"}}, "routes": {"r": {
        "service": "s", "paths": ["/r"], "rate_limits": {"rules": [
            {"limit": [1], "window_size": [60], "consumers": {"nobody": {"limit": [2], "window_size": [60]}}}]}}}}
    with pytest.raises(ValueError, match="names consumer 'nobody'"):
        Policy.model_validate(policy)


@needs_cases
async def test_group_and_consumer_scoped_instances_alone_limit_only_those_callers(monkeypatch):
    """No route-level instance: Kong applies a consumer-group or consumer scoped instance to those
    callers only (the consumer's instance before its group's); everyone else is not limited."""
    from mcpgw.limits.counters import LocalCounters

    monkeypatch.setattr(backend, "local", LocalCounters(clock=lambda: 1_080_000.0))
    doc = case(CASE_30)
    doc["plugins"] = [p for p in doc["plugins"] if p["name"] != "rate-limiting-advanced"] + [
        {"name": "rate-limiting-advanced", "route": "mcp-route", "consumer_group": "admin",
         "config": {"limit": [2], "window_size": [3600]}},
        {"name": "rate-limiting-advanced", "consumer": "dev", "config": {"limit": [1], "window_size": [3600]}}]
    rule = translate(doc)["routes"]["mcp-route"]["rate_limits"]["rules"][0]
    assert rule["only_groups"] == ["admin"] and rule["only_consumers"] == ["dev"]
    assert rule["consumer_groups"] == {"admin": {"limit": [2], "window_size": [3600]}}
    assert rule["consumers"] == {"dev": {"limit": [1], "window_size": [3600]}}
    policy = Policy.model_validate(translate(doc))
    assert [await run(policy, "admin-key") is None for _ in range(3)] == [True, True, False]
    assert [await run(policy, "dev-key") is None for _ in range(2)] == [True, False]
    assert all([await run(policy, "other-key") is None for _ in range(5)])  # in no scoped instance: not limited
    doc["plugins"][-1]["config"]["window_type"] = "fixed"  # the instances disagree beyond their windows
    with pytest.raises(PolicyError) as refused:
        translate(doc)
    assert any("may change its windows only" in p for p in refused.value.problems)


def _seed_with(monkeypatch, config: dict) -> dict:
    from tests.test_ai_deck_e2e import SEED_002

    monkeypatch.setenv("OPENAI_TOKEN", "Bearer sk-test")
    doc = yaml.safe_load(SEED_002)
    doc["plugins"].append({"name": "ai-rate-limiting-advanced", "service": "mcp-service", "config": config})
    return doc


def test_kong_314_policies_form(monkeypatch):
    """The policies[] form (Kong's "rate limiting with multiple conditions" example): both
    conditions must hold; the counter is partitioned by provider only, as partition_by says."""
    doc = _seed_with(monkeypatch, {"policies": [
        {"match": [{"type": "provider", "partition_by": True, "values": ["openai"]},
                   {"type": "consumer", "key": "username", "values": ["chat-client"]}],
         "limits": [{"limit": 100, "window_size": 60}, {"limit": 1000, "window_size": 3600}]}]})
    native = translate(doc)
    assert native["routes"]["llm-chat"]["rate_limits"]["tokens"] == [
        {"provider": "openai", "name": "policy-1", "limit": [100, 1000], "window_size": [60, 3600],
         "window_type": "sliding", "tokens_count_strategy": "total_tokens", "partition_by": ["provider"],
         "providers": ["openai"], "only_consumers": ["chat-client"]}]
    Policy.model_validate(native)


def test_kong_314_match_types_model_path_ip_header_group(monkeypatch):
    """Each of Kong's example pages: model, path, ip, header, consumer group; each limit's own
    tokens_count_strategy; a policy without match is the fallback."""
    doc = _seed_with(monkeypatch, {"window_type": "fixed", "policies": [
        {"match": [{"type": "model", "partition_by": True, "values": ["gpt-5.1"]}],
         "limits": [{"limit": 100, "window_size": 60}, {"limit": 5, "window_size": 60, "tokens_count_strategy": "cost"}]},
        {"match": [{"type": "path", "values": ["/v1/chat"]}, {"type": "ip", "values": ["127.0.0.1", "192.0.2.0"]},
                   {"type": "header", "key": "X-Team", "partition_by": True},
                   {"type": "consumer_group", "key": "name", "values": ["dev"]}],
         "window_type": "sliding", "limits": [{"limit": 100, "window_size": 60}]},
        {"limits": [{"limit": 10, "window_size": 60}]}]})
    doc.setdefault("consumer_groups", []).append({"name": "dev"})
    tokens = translate(doc)["routes"]["llm-chat"]["rate_limits"]["tokens"]
    assert [(t["name"], t["tokens_count_strategy"], t["limit"]) for t in tokens] == [
        ("policy-1-total_tokens", "total_tokens", [100]), ("policy-1-cost", "cost", [5]),
        ("policy-2", "total_tokens", [100]), ("policy-3", "total_tokens", [10])]
    assert tokens[0]["models"] == ["gpt-5.1"] and tokens[0]["partition_by"] == ["model"]
    assert tokens[0]["window_type"] == "fixed" and tokens[2]["window_type"] == "sliding"
    assert tokens[2] | {} == {**tokens[2], "paths": ["/v1/chat"], "ips": ["127.0.0.1", "192.0.2.0"],
                              "headers": {"X-Team": []}, "only_groups": ["dev"], "partition_by": ["header"]}
    assert tokens[3]["fallback"] is True and tokens[3]["partition_by"] == []
    Policy.model_validate(translate(doc))


@pytest.mark.parametrize("policy, problem", [
    ({"match": [{"type": "service", "values": ["x"]}], "limits": [{"limit": 1, "window_size": 60}]},
     "match type 'service' is not supported"),
    ({"match": [{"type": "header", "values": ["x"]}], "limits": [{"limit": 1, "window_size": 60}]},
     "a header match needs key"),
    ({"match": [{"type": "consumer_group", "key": "id", "values": ["x"]}], "limits": [{"limit": 1, "window_size": 60}]},
     "matched by name"),
    ({"id": "1b7e1b3c-2a6e-4c5e-9d3e-3f1f0f7b1a11"}, "reusable policy entities are not supported"),
    ({"match": [], "limits": [{"limit": 1, "window_size": 60, "tokens_count_strategy": "requests"}]},
     "'requests' is not supported"),
])
def test_kong_314_policies_refused(monkeypatch, policy, problem):
    with pytest.raises(PolicyError) as refused:
        translate(_seed_with(monkeypatch, {"policies": [policy]}))
    assert any(problem in p for p in refused.value.problems), refused.value.problems


@needs_cases
async def test_case_30_allows_100_an_hour_per_consumer_then_429(monkeypatch):
    from mcpgw.limits.counters import LocalCounters

    monkeypatch.setattr(backend, "local", LocalCounters(clock=lambda: 1_080_000.0 + 1800))
    policy = Policy.model_validate(translate(case(CASE_30)))
    answers = [await run(policy, "dev-key") for _ in range(101)]
    assert answers[:100] == [None] * 100
    refused = answers[100]
    assert refused.status_code == 429 and json.loads(refused.content) == {"message": "API rate limit exceeded"}
    assert refused.headers["X-RateLimit-Limit-Hour"] == "100" and refused.headers["RateLimit-Remaining"] == "0"
    assert await run(policy, "other-key") is None  # the namespace is shared, the counter is per consumer
