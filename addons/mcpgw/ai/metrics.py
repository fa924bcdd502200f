"""Prometheus counters of LLM calls, by route, consumer, model and status, from usage.totals().

A collector rather than Counter objects: the sums are kept by usage.py whether or not metrics
are served, and read only when Prometheus scrapes."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily

from . import usage

LABELS = ["route", "consumer", "model", "status"]


class LlmCollector:
    def collect(self):
        calls = CounterMetricFamily("mcp_gateway_llm_requests", "LLM calls on LLM routes", labels=LABELS)
        tokens = CounterMetricFamily("mcp_gateway_llm_tokens", "Tokens the provider reported, by kind",
                                     labels=[*LABELS, "kind"])
        for labels, (n, prompt, completion) in sorted(usage.totals().items()):
            calls.add_metric(list(labels), n)
            tokens.add_metric([*labels, "prompt"], prompt)
            tokens.add_metric([*labels, "completion"], completion)
        yield calls
        yield tokens
