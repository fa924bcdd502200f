"""ai/usage.py, the interface other concerns (rate limits) read: parse either API's usage, cost
per million tokens, one call per publish to every listener, a failing listener skipped."""

from __future__ import annotations

from mcpgw.ai import usage


def call(**kw) -> usage.LlmCall:
    base = dict(route="r", consumer="alex", groups=("g",), model="gpt-4o", status=200,
                usage=usage.Usage(3, 4, 7), cost=None, latency_ms=1.0, ttft_ms=0.5, streamed=False)
    return usage.LlmCall(**{**base, **kw})


def test_parse_both_apis_and_refuse_guesses():
    assert usage.parse({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}) == usage.Usage(3, 4, 7)
    assert usage.parse({"input_tokens": 5, "output_tokens": 6}) == usage.Usage(5, 6, 11)
    for bad in (None, {}, {"prompt_tokens": "3", "completion_tokens": 4}, {"prompt_tokens": -1, "completion_tokens": 2},
                {"prompt_tokens": True, "completion_tokens": 1}):
        assert usage.parse(bad) is None


def test_cost_per_million():
    assert usage.cost(usage.Usage(1_000_000, 500_000, 1_500_000), 2.5, 10) == 7.5
    assert usage.cost(usage.Usage(1, 1, 2), None, None) is None and usage.cost(None, 1, 1) is None


def test_listeners_get_each_call_once_and_a_failing_one_is_skipped():
    seen = []

    def broken(_):
        raise RuntimeError("listener bug")

    off_broken = usage.subscribe(broken)
    off = usage.subscribe(seen.append)
    try:
        before = usage.totals().get(("r-usage-test", "alex", "gpt-4o", "200"), (0, 0, 0))
        usage.publish(call(route="r-usage-test"))
        assert [c.route for c in seen] == ["r-usage-test"]
        assert usage.totals()[("r-usage-test", "alex", "gpt-4o", "200")] == (before[0] + 1, before[1] + 3, before[2] + 4)
    finally:
        off()
        off_broken()
    usage.publish(call(route="r-usage-test"))
    assert len(seen) == 1  # unsubscribed
