import pytest

from mcpgw.policy.models import Policy
from mcpgw.routing import RouteTable


def table(**routes) -> RouteTable:
    services = {"gh": {"url": "https://api.githubcopilot.com/mcp"}, "root": {"url": "http://127.0.0.1:8931"},
                "other": {"url": "https://api.githubcopilot.com/mcp/x"}}
    return RouteTable(Policy.model_validate({"services": services, "routes": routes}))


def test_gateway_prefix_strip_path():
    t = table(gh={"service": "gh", "paths": ["/github-mcp"]})
    m = t.match_gateway("/github-mcp")
    assert m and m.name == "gh" and m.kind == "mcp"
    assert t.upstream_path(m, "/github-mcp") == "/mcp"
    assert t.upstream_path(m, "/github-mcp/") == "/mcp/"
    assert t.upstream_path(m, "/github-mcp/sub?x=1") == "/mcp/sub?x=1"
    assert t.match_gateway("/other") is None
    assert t.match_gateway("/") is None


def test_strip_path_false_keeps_full_path():
    t = table(gh={"service": "gh", "paths": ["/github-mcp"], "strip_path": False})
    m = t.match_gateway("/github-mcp/a")
    assert t.upstream_path(m, "/github-mcp/a") == "/mcp/github-mcp/a"


def test_longest_prefix_wins():
    t = table(a={"service": "gh", "paths": ["/mcp"]}, b={"service": "root", "paths": ["/mcp/legacy"]})
    assert t.match_gateway("/mcp/legacy/sse").name == "b"
    assert t.match_gateway("/mcp/x").name == "a"


def test_prm_well_known_path_matches_route():
    t = table(gh={"service": "gh", "paths": ["/github-mcp"]})
    m = t.match_gateway("/.well-known/oauth-protected-resource/github-mcp")
    assert m and m.kind == "prm" and m.name == "gh"
    assert t.match_gateway("/.well-known/oauth-protected-resource/nope") is None


def test_intercept_matches_service_url_prefix():
    t = table(gh={"service": "gh", "paths": ["/github-mcp"]}, other={"service": "other", "paths": ["/o"]})
    assert t.match_intercept("https", "api.githubcopilot.com", 443, "/mcp").name == "gh"
    assert t.match_intercept("https", "API.githubcopilot.com", 443, "/mcp?x").name == "gh"
    assert t.match_intercept("https", "api.githubcopilot.com", 443, "/mcp/x/y").name == "other"
    assert t.match_intercept("https", "api.githubcopilot.com", 443, "/mcpx") is None
    # The exact RFC 9728 path of a service is that route's "prm" match (intercept: the upstream's own document).
    prm = t.match_intercept("https", "api.githubcopilot.com", 443, "/.well-known/oauth-protected-resource/mcp")
    assert prm.name == "gh" and prm.kind == "prm"
    assert t.match_intercept("https", "api.githubcopilot.com", 443, "/.well-known/oauth-protected-resource/mcp/y") is None
    assert t.match_intercept("https", "api.githubcopilot.com.", 443, "/mcp").name == "gh"  # a trailing dot is the same name
    assert t.match_intercept("http", "api.githubcopilot.com", 80, "/mcp") is None
    assert t.match_intercept("https", "example.com", 443, "/mcp") is None


def test_legacy_endpoint_maps_back_to_gateway_path():
    t = table(legacy={"service": "root", "paths": ["/github-legacy"]}, gh={"service": "gh", "paths": ["/github-mcp"]})
    m = t.match_gateway("/github-legacy/sse")
    assert t.upstream_path(m, "/github-legacy/sse") == "/sse"
    assert t.gateway_path(m, "/messages/?session_id=abc") == "/github-legacy/messages/?session_id=abc"
    m2 = t.match_gateway("/github-mcp")
    assert t.gateway_path(m2, "/messages/?session_id=abc") is None  # outside the service path: not reachable
    assert t.gateway_path(m2, "/mcp/messages") == "/github-mcp/messages"


@pytest.mark.parametrize("bad, expected", [
    ({"services": {"a": {"url": "ftp://x"}}, "routes": {"r": {"service": "a", "paths": ["/x"]}}}, r"absolute http\(s\) URL"),
    ({"services": {"a": {"url": "http://x"}}, "routes": {"r": {"service": "b", "paths": ["/x"]}}}, "not defined"),
    ({"services": {"a": {"url": "http://x"}}, "routes": {"r": {"service": "a", "paths": ["x"]}}}, "must start with '/'"),
    ({"services": {"a": {"url": "http://x"}}, "routes": {"r": {"service": "a", "paths": ["/x"]},
                                                          "s": {"service": "a", "paths": ["/x"]}}}, "claimed by both"),
    ({"services": {"a": {"url": "http://x?q=1"}}, "routes": {"r": {"service": "a", "paths": ["/x"]}}}, "query"),
])
def test_invalid_policies_are_refused(bad, expected):
    with pytest.raises(ValueError, match=expected):
        Policy.model_validate(bad)
