"""The benchmark's policy cases beside its own key-auth + ACL policy (scripts/bench.py):

  open  one open route per upstream, no plugin: what the gateway costs before any policy feature;
  seed  Kong's "Secure External MCP Gateway" recipe (the seed scenario), from its own decK file
        tests/data/kong-recipe.yaml: the GitHub route with the datakit PRM challenge, key-auth
        (hide_credentials), ai-mcp-proxy's tool ACL with payload and statistics logging, and cors;
        the PRM route with its response-transformer-advanced; the Konnect route (ai-mcp-oauth2,
        token swap), loaded but not called.

The seed case changes the decK file only where a benchmark must: the GitHub service points at
the JSON demo upstream over plain HTTP, and the GitHub service with its route and plugins is
there a second time, every name suffixed `-sse`, at /github-mcp-sse in front of the SSE demo
upstream (the recipe has one route; the benchmark measures JSON and SSE answers), whose tool ACL
also allows the demo's run_workflow (the time to the first SSE event is measured with it). Its DECK_*
variables name local addresses that are never contacted: no request goes to the Konnect route."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "tests" / "data" / "kong-recipe.yaml"

# The recipe's consumer 'dev-user' (group developer) and the GitHub token the client got from
# GitHub's OAuth flow: the datakit step wants an Authorization header, key-auth the apikey.
API_KEY = "dev-api-key"
CONSUMER = "dev-user"
GITHUB_TOKEN = "Bearer ghu_bench0000000000000000000000"

SEED_ENV = {  # decK's ${{ env "..." }}: the Konnect route's, loaded and never used by the benchmark
    "DECK_KONNECT_MCP_HOST": "127.0.0.1",
    "DECK_KONNECT_MCP_TOKEN": "kpat_bench_never_sent",
    "DECK_OAUTH_AUTH_SERVER": "http://127.0.0.1:9/realms/bench",
    "DECK_OAUTH_INTROSPECTION_URL": "http://127.0.0.1:9/realms/bench/introspect",
    "DECK_OAUTH_CLIENT_ID": "bench",
    "DECK_OAUTH_CLIENT_SECRET": "bench-secret",
}

SEED_PATHS = {"json": "/github-mcp", "sse": "/github-mcp-sse"}


def _point_at(service: dict, url: str, path: str | None = None) -> None:
    parts = urlsplit(url)
    service.update(protocol=parts.scheme, host=parts.hostname, port=parts.port, path=path or parts.path)


def _suffixed(service: dict, suffix: str) -> dict:
    """The service with its routes and plugins under new names (Kong wants each name once)."""
    twin = yaml.safe_load(yaml.safe_dump(service).replace("oauth-protected-resource/github-mcp\"",
                                                          f"oauth-protected-resource/github-mcp{suffix}\""))
    twin["name"] += suffix
    for route in twin.get("routes", []):
        route["name"] += suffix
        route["paths"] = [p + suffix for p in route["paths"]]
        for plugin in route.get("plugins", []):
            if "instance_name" in plugin:
                plugin["instance_name"] += suffix
    return twin


def _allow_for_developers(service: dict, tool: str, description: str) -> None:
    """The time to the first SSE event is measured with the demo's run_workflow, which reports
    progress; the recipe's ACL, default deny for developers, does not list it."""
    for plugin in service["routes"][0]["plugins"]:
        if plugin["name"] == "ai-mcp-proxy":
            plugin["config"]["tools"].append({"name": tool, "description": description,
                                              "acl": {"allow": ["admin", "developer"]}})


def seed_deck(upstream_urls: dict[str, str]) -> str:
    """The recipe's decK file for the benchmark's upstreams (kind -> MCP endpoint URL)."""
    deck = yaml.safe_load(RECIPE.read_text())
    services = {s["name"]: s for s in deck["services"]}
    github = services["github-mcp-service"]
    _point_at(github, upstream_urls["json"])
    _point_at(services["github-mcp-prm-service"], upstream_urls["json"], "/.well-known/oauth-protected-resource/mcp")
    sse = _suffixed(github, "-sse")
    _allow_for_developers(sse, "run_workflow", "Run a workflow (reports progress)")
    _point_at(sse, upstream_urls["sse"])
    deck["services"].insert(deck["services"].index(github) + 1, sse)
    return yaml.safe_dump(deck, sort_keys=False)


def open_policy(upstream_urls: dict[str, str]) -> dict:
    """One route per upstream and nothing else (native format)."""
    policy: dict = {"version": 1, "services": {}, "routes": {}}
    for kind, url in upstream_urls.items():
        policy["services"][f"github-{kind}"] = {"url": url}
        policy["routes"][f"github-{kind}"] = {"service": f"github-{kind}", "paths": [f"/github-{kind}"]}
    return policy
