"""Rate-limit figures for the Prometheus endpoint, read at scrape time (registered by the addon
in the metrics registry)."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import backend


class LimitsCollector:
    def collect(self):
        s = backend.stats
        for name, text, value in (
            ("mcp_gateway_rate_limit_refusals", "Requests refused by a rate limit", s.refused),
            ("mcp_gateway_rate_limit_shadow", "Requests a shadow-mode rate limit would have refused", s.shadowed),
            ("mcp_gateway_rate_limit_redis_errors", "Failed Redis calls of rate-limit checks", s.redis_errors),
            ("mcp_gateway_rate_limit_redis_fallbacks", "Rate-limit checks counted locally because Redis was unreachable",
             s.redis_fallbacks),
            ("mcp_gateway_rate_limit_redis_refusals",
             "Requests refused because Redis was unreachable and the route is not fault tolerant", s.redis_refusals),
        ):
            family = CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family
        down = GaugeMetricFamily("mcp_gateway_rate_limit_redis_down", "1 while the rate limits' Redis is unreachable")
        down.add_metric([], 1 if s.redis_down else 0)
        yield down
