"""Intercept mode with LLM routes (routing.py): one provider origin serves a chat route and a
Responses route of the same provider URL, each at its own endpoint; another path of that origin
goes to the first of them (which refuses it), never unmatched past the gateway; a second route
of one endpoint and URL loses to the first, as every route of one service URL does."""

from __future__ import annotations

from mcpgw.policy.models import Policy
from mcpgw.routing import RouteTable


def table() -> RouteTable:
    ai = lambda kind: {"route_type": kind}  # noqa: E731
    return RouteTable(Policy.model_validate({
        "services": {"openai": {"url": "https://api.openai.com/v1"}, "gh": {"url": "https://api.githubcopilot.com/mcp"}},
        "routes": {"chat": {"service": "openai", "paths": ["/chat"], "ai": ai("llm/v1/chat")},
                   "responses": {"service": "openai", "paths": ["/responses"], "ai": ai("llm/v1/responses")},
                   "chat-again": {"service": "openai", "paths": ["/chat2"], "ai": ai("llm/v1/chat")},
                   "github": {"service": "gh", "paths": ["/github"]}}}))


def name(t: RouteTable, host: str, path: str) -> str | None:
    m = t.match_intercept("https", host, 443, path)
    return m.route.name if m else None


def test_each_endpoint_to_its_route_and_other_paths_to_the_first():
    t = table()
    assert name(t, "api.openai.com", "/v1/chat/completions") == "chat"
    assert name(t, "api.openai.com", "/v1/responses?x=1") == "responses"
    assert name(t, "api.openai.com", "/v1/models") == "chat"  # governed: answered (refused) by the first route
    assert name(t, "api.openai.com", "/v2/other") is None  # outside every route's service path
    assert name(t, "api.githubcopilot.com", "/mcp") == "github"
    assert "chat-again" not in {r.name for routes in t._intercept.values() for r in routes}
