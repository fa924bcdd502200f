"""ai/balancer.py's algorithms on real policy settings: the order each gives the targets (the
first is tried, the others are the failover order), and the measures lowest-latency and
lowest-usage keep from finished calls."""

from __future__ import annotations

import collections

from mcpgw.ai import balancer, targets
from mcpgw.ai.request import LlmState
from mcpgw.ai.settings import AiSettings
from mcpgw.ai.usage import LlmCall, Usage


def pool(algorithm: str, weights=(100, 100, 100), **extra) -> balancer.RoutePool:
    settings = AiSettings.model_validate({
        "route_type": "llm/v1/chat",
        "targets": [{"url": f"http://t{i}.example.com/v1", "weight": w} for i, w in enumerate(weights)],
        "balancer": {"algorithm": algorithm, **extra}})
    states = [targets.TargetState(i, t, "http", f"t{i}.example.com", 80, "/v1") for i, t in enumerate(settings.targets)]
    return balancer.RoutePool(settings, states)


def firsts(p: balancer.RoutePool, n: int, key=None) -> list[int]:
    return [p.order(key)[0].index for _ in range(n)]


def test_priority_serves_the_highest_weight_in_turn_and_the_rest_only_after():
    p = pool("priority", (70, 70, 25))
    orders = [[t.index for t in p.order()] for _ in range(4)]
    assert [o[:2] for o in orders] == [[0, 1], [1, 0], [0, 1], [1, 0]]
    assert all(o[2] == 2 for o in orders)


def test_consistent_hashing_keeps_a_key_on_one_target_and_spreads_keys():
    p = pool("consistent-hashing", hash_on_header="X-User")
    assert len(set(firsts(p, 20, "user-1"))) == 1
    assert [t.index for t in p.order("user-1")] == [t.index for t in p.order("user-1")]  # the failover order too
    spread = collections.Counter(p.order(f"user-{i}")[0].index for i in range(300))
    assert set(spread) == {0, 1, 2} and min(spread.values()) > 50
    # a target removed moves only the keys it held
    smaller = balancer.RoutePool(p.settings, p.targets[:2])
    moved = [i for i in range(300) if p.order(f"user-{i}")[0].index != 2
             and smaller.order(f"user-{i}")[0].index != p.order(f"user-{i}")[0].index]
    assert moved == []
    assert sorted(firsts(p, 3)) == [0, 1, 2]  # no key: round-robin


def finished(p: balancer.RoutePool, target: int, **kw) -> None:
    state = LlmState(p.settings, "gpt-4o", p.settings.model.options, target=p.targets[target])
    call = dict(route="r", consumer=None, groups=(), model="gpt-4o", status=200, usage=Usage(10, 90, 100),
                cost=0.5, latency_ms=1000.0, ttft_ms=100.0, streamed=True)
    targets.observe(state, LlmCall(**{**call, **kw}))


def test_lowest_usage_counts_by_its_strategy():
    p = pool("lowest-usage", tokens_count_strategy="prompt-tokens")
    assert [t.index for t in p.order()] == [0, 1, 2]  # nothing measured: in order
    finished(p, 0, usage=Usage(500, 1, 501))
    finished(p, 1, usage=Usage(10, 5000, 5010))  # many completion tokens: prompt-tokens does not count them
    assert [t.index for t in p.order()] == [2, 1, 0]
    finished(p, 2, status=500, usage=Usage(1000, 0, 1000))  # a failed call is not usage
    assert p.order()[0].index == 2


def test_lowest_latency_tpot_and_e2e():
    p = pool("lowest-latency")
    finished(p, 0, latency_ms=1000.0, ttft_ms=100.0, usage=Usage(1, 900, 901))  # 1 ms per token
    finished(p, 1, latency_ms=200.0, ttft_ms=100.0, usage=Usage(1, 10, 11))  # 10 ms per token, faster in all
    finished(p, 2, latency_ms=500.0, ttft_ms=100.0, usage=Usage(1, 100, 101))  # 4 ms per token
    assert [t.index for t in p.order()] == [0, 2, 1]
    e2e = pool("lowest-latency", latency_strategy="e2e")
    for i, ms in enumerate((1000.0, 200.0, 500.0)):
        finished(e2e, i, latency_ms=ms)
    assert [t.index for t in e2e.order()] == [1, 2, 0]
