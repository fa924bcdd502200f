"""decK: ai-mcp-proxy's conversion-listener, conversion-only and listener modes as native
rest_tools (policy/deck_conversion.py), on the Kong documentation cases that use them and on
options the gateway refuses."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mcpgw.policy.deck import translate_deck
from mcpgw.policy.loader import PolicyError
from mcpgw.policy.models import Policy
from mcpgw.rest_tools.catalog import catalog

CASES = Path(__file__).resolve().parents[3] / "shared" / "kong-docs" / "cases"
needs_cases = pytest.mark.skipif(not CASES.is_dir(), reason="the Kong docs corpus is not beside this checkout")
ENV = {"DECK_MCP_RESOURCE_URL": "http://localhost:8000/ecommerce-mcp", "DECK_OAUTH_AUTH_SERVER": "https://idp.example",
       "DECK_OAUTH_INTROSPECTION_URL": "https://idp.example/introspect", "DECK_OAUTH_CLIENT_ID": "kong",
       "DECK_OAUTH_CLIENT_SECRET": "s3cret-introspection", "DECK_WEATHERAPI_API_KEY": "weather-key-123",
       "DECK_FREECURRENCYAPI_API_KEY": "currency-key-123", "DECK_OKTA_CLIENT_ID": "kong",
       "DECK_OKTA_CLIENT_SECRET": "okta-secret", "DECK_OKTA_AUTH_SERVER": "https://okta.example",
       "DECK_OKTA_INTROSPECTION_ENDPOINT": "https://okta.example/introspect"}


def case(name: str) -> dict:
    return yaml.safe_load(next(CASES.glob(f"{name}-*.yaml")).read_text())


def native(doc: dict) -> Policy:
    return Policy.model_validate(translate_deck(copy.deepcopy(doc), "kong.yaml", env=ENV))


@needs_cases
def test_recipe_listener_inherits_every_tools_acl():
    policy = native(case("20"))
    listener = policy.routes["ecommerce-mcp"]
    assert listener.rest_tools.mode == "listener" and listener.rest_tools.server.tag == "ecom-mcp"
    assert listener.rest_tools.server.timeout == 10.0 and listener.rest_tools.server.forward_client_headers
    acl = {t.name: (t.acl.allow, t.acl.deny) for t in listener.acl.tools}
    assert acl["cancel-order"] == (["customer-support"], None)
    assert acl["restock-item"] == (["warehouse-ops"], None)
    assert acl["get-order"] == (["warehouse-ops", "customer-support"], None)
    assert listener.acl.include_consumer_groups and listener.acl.refuse_without_tools
    assert policy.routes["orders-mcp"].rest_tools.tags == ["secure-internal-mcp-gateway-recipe", "ecom-mcp"]
    served = catalog(policy, "ecommerce-mcp")
    assert list(served.tools) == ["list-orders", "get-order", "cancel-order", "list-inventory", "check-inventory",
                                  "restock-item", "get-customer", "update-customer-contact"]
    assert served.tools["cancel-order"].definition["annotations"] == {"destructiveHint": True, "title": "Cancel order"}
    assert catalog(policy, "orders-mcp") is None  # conversion-only


@needs_cases
def test_aggregate_howto_serviceless_listener_and_generated_names():
    policy = native(case("13"))
    listener = policy.routes["listener-route"]
    assert policy.services[listener.service].url == "http://127.0.0.1:9"  # a placeholder nothing is sent to
    assert list(catalog(policy, "listener-route").tools) == ["mcp-route-1", "mcp-route-2", "weather-route-1",
                                                            "freecurrency-route-1"]
    weather = catalog(policy, "listener-route").tools["weather-route-1"]
    assert weather.spec.query["key"][0].reveal() == "weather-key-123"


@needs_cases
def test_acl_howto_default_acl_of_the_tagged_plugin_applies_per_tool():
    policy = native(case("12"))
    acl = {t.name: (t.acl.allow, t.acl.deny) for t in policy.routes["mcp-aggregation"].acl.tools}
    assert acl["weather-internet"] == (["gold-partner", "silver-partner"], ["bronze-partner"])
    assert policy.routes["mcp-aggregation"].acl.max_request_body_size == 32768


@needs_cases
@pytest.mark.parametrize("name, route", [("05", "mcp-route"), ("06", "mcp-route"), ("15", "mcp-route"),
                                         ("19", "mcp-route"), ("23", "chucknorris-mcp")])
def test_conversion_listener_examples_load(name, route):
    policy = native(case(name))
    assert policy.routes[route].rest_tools.mode == "conversion-listener"
    assert catalog(policy, route).tools


@needs_cases
@pytest.mark.parametrize("name", ["07", "14"])
def test_conversion_only_examples_load(name):
    policy = native(case(name))
    assert any(r.rest_tools is not None for r in policy.routes.values())


def deck(plugin_config: dict, **route) -> dict:
    return {"_format_version": "3.0", "services": [{"name": "api", "url": "http://api.internal", "routes": [
        {"name": "r", "paths": ["/r"], **route, "plugins": [{"name": "ai-mcp-proxy", "config": plugin_config}]}]}]}


TOOL = {"name": "t", "description": "x", "method": "GET", "path": "/r/x"}


@pytest.mark.parametrize("config, message", [
    ({"mode": "conversion-listener", "tools": [{**TOOL, "responses": {"200": {}}}]},
     "config.tools[0].responses: not supported (responses: the result is not validated against it here)"),
    ({"mode": "conversion-listener", "tools": [TOOL], "server": {"session": {"strategy": "redis"}}},
     "config.server.session: only managed: true is supported"),
    ({"mode": "conversion-listener", "tools": [TOOL], "proxy_config": {"https_proxy_host": "p", "https_proxy_port": 1,
                                                                        "https_verify": False}},
     "config.proxy_config.https_verify: option not supported"),
    ({"mode": "conversion-listener", "tools": [TOOL], "proxy_config": {"https_proxy_host": "p"}},
     "https_proxy_host and https_proxy_port go together"),
    ({"mode": "conversion-listener", "tools": [TOOL], "proxy_config": {"https_proxy_host": "http://p", "https_proxy_port": 1}},
     "https_proxy_host is a host name or address, not a URL"),
    ({"mode": "listener", "server": {"tag": "x"}, "tools": [TOOL]},
     "config.tools: a listener takes its tools, their ACLs and their proxy from the conversion plugins"),
    ({"mode": "listener", "server": {"tag": "x"}, "proxy_config": {"https_proxy_host": "p", "https_proxy_port": 1}},
     "config.proxy_config: a listener takes its tools, their ACLs and their proxy"),
    ({"mode": "listener", "server": {"tag": "nobody"}}, "no route with rest_tools has that tag"),
])
def test_refused_options(config, message):
    with pytest.raises(PolicyError) as e:
        translate_deck(deck(config), "kong.yaml", env={})
    assert any(message in m for m in e.value.problems), e.value.problems


def test_kong_units_and_inert_options():
    doc = deck({"mode": "conversion-listener", "tools": [{**TOOL, "host": "api.example", "scheme": "https"}],
                "server": {"timeout": 2500, "forward_client_headers": False, "session": {"managed": True}},
                "tools_cache_ttl_seconds": 300, "max_request_body_size": 8192})
    policy = native(doc)
    settings = policy.routes["r"].rest_tools
    assert settings.server.timeout == 2.5 and settings.server.forward_client_headers is False
    assert policy.routes["r"].acl.max_request_body_size == 8192


def test_secret_references_kept_by_the_converter():
    doc = deck({"mode": "conversion-listener", "tools": [{**TOOL, "query": {"key": ['${{ env "DECK_KEY" }}']}}]})
    out = translate_deck(doc, "kong.yaml", env={"DECK_KEY": "the-key-value"}, secret_references=True)
    assert out["routes"]["r"]["rest_tools"]["tools"][0]["query"] == {"key": ["{env://DECK_KEY}"]}


def test_proxy_config_translates_with_its_credential_as_a_reference():
    doc = deck({"mode": "conversion-listener", "tools": [TOOL], "proxy_config": {
        "https_proxy_host": "proxy.internal", "https_proxy_port": 8080, "http_proxy_host": "proxy.internal",
        "http_proxy_port": 3128, "proxy_scheme": "http", "auth_username": "gw", "auth_password": '${{ env "DECK_PW" }}'}})
    out = translate_deck(copy.deepcopy(doc), "kong.yaml", env={"DECK_PW": "proxy-pw-value"}, secret_references=True)
    assert out["routes"]["r"]["upstream_proxy"]["auth_password"] == "{env://DECK_PW}"
    resolved = translate_deck(copy.deepcopy(doc), "kong.yaml", env={"DECK_PW": "proxy-pw-value"})
    proxy = Policy.model_validate(resolved).routes["r"].upstream_proxy
    assert proxy.auth_password.reveal() == "proxy-pw-value"
    assert proxy.url_for("https") == "http://proxy.internal:8080" and proxy.url_for("http") == "http://proxy.internal:3128"
    assert "proxy-pw-value" not in repr(proxy) and "proxy-pw-value" not in proxy.model_dump_json()


@needs_cases
def test_deck_fixture_22_is_refused_for_upstream_server_only():
    """decK's ai2kong output: its conversion-listener entries and its passthrough route's
    proxy_config translate; the upstream-server route alone is refused, saying why."""
    doc = case("22")
    with pytest.raises(PolicyError) as e:
        translate_deck(copy.deepcopy(doc), "kong.yaml", env={})
    (problem,) = e.value.problems
    assert "config.mode: mode 'upstream-server' is not supported" in problem and "federation" in problem
    # Its two conversion routes claim one path (Kong gives no order between them): one of them loads;
    # the other, a claim ACL on a route without an OAuth plugin, is refused (tests/unit/test_claim_acl_source.py).
    services = [s for s in doc["services"] if s["name"] not in ("upstream-mcp", "secure-flights-mcp-oauth")]
    policy = Policy.model_validate(translate_deck({**doc, "services": services}, "kong.yaml", env={}))
    assert policy.routes["secure-flights-mcp-consumer-route"].rest_tools.mode == "conversion-listener"
    vendor = policy.routes["vendor-proxy-mcp-route"]
    assert vendor.upstream_proxy.address_for("https") == ("proxy.internal", 8080)
    assert vendor.upstream_proxy.address_for("http") is None and vendor.rest_tools is None
