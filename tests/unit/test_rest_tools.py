"""REST tools (rest_tools/): settings, the catalog compiled per policy, and the request a call's
arguments make. Attacker cases beside the user's: arguments must never choose another path,
host, header or request than the tool's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mcpgw.policy.models import Policy
from mcpgw.rest_tools.catalog import build, catalog
from mcpgw.rest_tools.request import BadArguments, build_request

ORDERS = {
    "name": "get-order", "description": "Get an order", "path": "orders/{orderId}",
    "parameters": [
        {"name": "orderId", "in": "path", "schema": {"type": "string"}, "description": "The order"},
        {"name": "fields", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
        {"name": "verbose", "in": "query", "schema": {"type": "boolean"}},
        {"name": "X-Tenant", "in": "header", "schema": {"type": "string"}},
        {"name": "session", "in": "cookie", "schema": {"type": "string"}},
    ],
}


def policy(routes: dict, services: dict | None = None) -> Policy:
    return Policy.model_validate({
        "services": services or {"api": {"url": "http://api.internal:8080/base"}},
        "routes": routes,
    })


def one_tool(tool: dict, **route) -> Policy:
    return policy({"r": {"service": "api", "paths": ["/r"], "rest_tools": {"mode": "conversion-listener",
                                                                       "tools": [tool]}, **route}})


def tool_of(p: Policy, name: str, route: str = "r"):
    return catalog(p, route).tools[name]


def test_input_schema_from_parameters_and_body():
    p = one_tool({**ORDERS, "method": "post", "request_body": {
        "content": {"application/json": {"schema": {"type": "object", "properties": {"note": {"type": "string"}}}}},
        "required": True, "description": "The change"}})
    definition = tool_of(p, "get-order").definition
    schema = definition["inputSchema"]
    assert schema["required"] == ["orderId", "body"] and schema["additionalProperties"] is False
    assert schema["properties"]["orderId"] == {"type": "string", "description": "The order"}
    assert schema["properties"]["body"]["description"] == "The change"
    assert definition["name"] == "get-order" and definition["description"] == "Get an order"


def test_names_kong_rules_and_annotations():
    p = policy({"shop": {"service": "api", "paths": ["/shop"], "rest_tools": {"mode": "conversion-listener", "tools": [
        {"description": "a"},
        {"description": "b", "annotations": {"title": "Get users", "read_only_hint": True}},
        {"description": "c", "name": "named", "annotations": {"title": "Shown"}},
    ]}}})
    cat = catalog(p, "shop")
    assert list(cat.tools) == ["shop-1", "Get users", "named"]
    assert cat.tools["Get users"].definition["annotations"] == {"title": "Get users", "readOnlyHint": True}
    assert cat.tools["named"].definition["title"] == "Shown"


def test_paths_relative_under_route_or_the_services_own():
    p = policy({"r": {"service": "api", "paths": ["/r"], "rest_tools": {"mode": "conversion-listener", "tools": [
        {"name": "rel", "description": "x", "path": "./v1/a"},
        {"name": "routed", "description": "x", "path": "/r/v2/b"},
        {"name": "own", "description": "x", "path": "/orders"},
    ]}}})
    assert build_request(tool_of(p, "rel"), {}).path == "/base/v1/a"  # strip_path removes the route prefix
    assert build_request(tool_of(p, "routed"), {}).path == "/base/v2/b"
    assert build_request(tool_of(p, "own"), {}).path == "/base/orders"  # not under the route: the service's path


def test_request_carries_exactly_the_arguments():
    p = one_tool({**ORDERS, "query": {"api_key": ["k-123"]}, "headers": {"X-Version": ["2"]}})
    rest = build_request(tool_of(p, "get-order"), {"orderId": "o 1", "fields": ["a", "b&c"], "verbose": False,
                                                   "X-Tenant": "acme", "session": "s;1"})
    assert rest.method == "GET"
    assert rest.path == "/base/orders/o%201?api_key=k-123&fields=a&fields=b%26c&verbose=false"
    assert rest.headers == [("X-Version", "2"), ("X-Tenant", "acme"), ("Cookie", "session=s%3B1")]
    assert rest.body is None


def test_bodies_json_and_form():
    json_tool = {"name": "j", "description": "x", "method": "POST", "request_body": {
        "content": {"application/json": {"schema": {"type": "object"}}}}}
    form_tool = {"name": "f", "description": "x", "method": "PUT", "request_body": {
        "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}}}
    p = policy({"r": {"service": "api", "paths": ["/r"], "rest_tools": {"mode": "conversion-listener",
                                                                       "tools": [json_tool, form_tool]}}})
    rest = build_request(tool_of(p, "j"), {"body": {"a": "é", "n": [1, 2]}})
    assert rest.body == '{"a":"é","n":[1,2]}'.encode() and ("Content-Type", "application/json") in rest.headers
    rest = build_request(tool_of(p, "f"), {"body": {"color": ["red", "blue"], "x": "a b"}})
    assert rest.body == b"color=red&color=blue&x=a%20b"


@pytest.mark.parametrize("value, path", [
    ("../admin", "/base/orders/..%2Fadmin"),
    ("%2F", "/base/orders/%252F"),
    ("a/b", "/base/orders/a%2Fb"),
    ("?x=1#y", "/base/orders/%3Fx%3D1%23y"),
    ("..%2f..%2fadmin", "/base/orders/..%252f..%252fadmin"),
])
def test_path_arguments_stay_one_segment(value, path):
    rest = build_request(tool_of(one_tool(ORDERS), "get-order"), {"orderId": value})
    assert rest.path == path


@pytest.mark.parametrize("value", ["..", ".", ""])
def test_dot_and_empty_path_arguments_refused(value):
    with pytest.raises(BadArguments):
        build_request(tool_of(one_tool(ORDERS), "get-order"), {"orderId": value})


def test_header_argument_cannot_split_the_request():
    with pytest.raises(BadArguments, match="control"):
        build_request(tool_of(one_tool(ORDERS), "get-order"), {"orderId": "1", "X-Tenant": "a\r\nHost: evil"})


def test_arguments_validated_against_the_schema():
    validator = tool_of(one_tool(ORDERS), "get-order").validator
    assert not list(validator.iter_errors({"orderId": "1"}))
    assert list(validator.iter_errors({}))  # required
    assert list(validator.iter_errors({"orderId": "1", "extra": 1}))  # additionalProperties
    assert list(validator.iter_errors({"orderId": {"$gt": 1}}))


@pytest.mark.parametrize("tool, message", [
    ({"name": "x", "description": "x", "path": "/r/{id}"}, "path parameters"),
    ({"name": "x", "description": "x", "parameters": [{"name": "Host", "in": "header"}]}, "not allowed"),
    ({"name": "x", "description": "x", "parameters": [{"name": "Authorization", "in": "header"}]}, "not allowed"),
    ({"name": "x", "description": "x", "headers": {"Authorization": ["Bearer x"]}}, "cannot be set"),
    ({"name": "x", "description": "x", "path": "/r/../admin"}, "dot segment"),
    ({"name": "x", "description": "x", "path": "/r?a=1"}, "no query"),
    ({"name": "x", "description": "x", "parameters": [{"name": "a", "in": "query", "schema": {"type": "nope"}}]},
     "not a valid JSON Schema"),
    ({"name": "x", "description": "x", "request_body": {"content": {"text/xml": {"schema": {}}}}}, "not supported"),
    ({"name": "x", "description": "x", "parameters": [{"name": "a", "in": "query"}, {"name": "a", "in": "header"}]},
     "used twice"),
])
def test_unsafe_or_ambiguous_tools_refused_at_load(tool, message):
    with pytest.raises(ValidationError, match=message):
        one_tool(tool)


def test_swagger_style_parameter_keywords():
    p = one_tool({"name": "x", "description": "x", "parameters": [
        {"name": "days", "in": "query", "type": "integer", "enum": [1, 2], "schema": {"minimum": 1}}]})
    assert tool_of(p, "x").definition["inputSchema"]["properties"]["days"] == {"type": "integer", "enum": [1, 2],
                                                                               "minimum": 1}


def listener_policy(**listener) -> dict:
    tool = {"name": "t", "description": "x"}
    return {
        "a": {"service": "api", "paths": ["/a"], "rest_tools": {"mode": "conversion-only", "tags": ["shop"],
                                                               "tools": [tool]}},
        "b": {"service": "api", "paths": ["/b"], "rest_tools": {"mode": "conversion-only", "tags": ["other"],
                                                               "tools": [{**tool, "name": "u"}]}},
        "mcp": {"service": "api", "paths": ["/mcp"], "rest_tools": {"mode": "listener", "server": {"tag": "shop"}},
                **listener},
    }


def test_listener_serves_the_tagged_routes_tools_only():
    p = policy(listener_policy())
    cat = catalog(p, "mcp")
    assert list(cat.tools) == ["t"] and cat.tools["t"].home == "a"
    assert catalog(p, "a") is None  # conversion-only: served by listeners only


def test_listener_duplicate_names_refused_naming_both_routes():
    routes = listener_policy()
    routes["b"]["rest_tools"]["tags"] = ["shop"]
    routes["b"]["rest_tools"]["tools"][0]["name"] = "t"
    with pytest.raises(ValidationError, match="two tools named 't' \\(from routes 'a' and 'b'\\)"):
        policy(routes)


def test_listener_needs_a_tag_that_exists_and_the_acl_its_tools_have():
    with pytest.raises(ValidationError, match="no route with rest_tools has that tag"):
        policy(listener_policy(rest_tools={"mode": "listener", "server": {"tag": "nope"}}))
    routes = listener_policy()
    routes["a"]["acl"] = {"tools": [{"name": "t", "acl": {"allow": ["admins"]}}]}
    with pytest.raises(ValidationError, match="listener without acl"):
        policy(routes)


def test_listener_defines_no_tools():
    with pytest.raises(ValidationError, match="defines no tools"):
        policy(listener_policy(rest_tools={"mode": "listener", "server": {"tag": "shop"},
                                           "tools": [{"name": "z", "description": "x"}]}))


def test_catalog_compiled_once_per_policy_version():
    p = one_tool(ORDERS)
    assert catalog(p, "r") is catalog(p, "r")
    assert build(p)["r"] is not catalog(p, "r")  # build() itself always compiles afresh


def test_inline_credential_values_are_secrets():
    from mcpgw.policy.secrets import Secret
    from mcpgw.redaction import policy_secrets

    p = one_tool({"name": "x", "description": "x", "query": {"api_key": ["k-very-secret-123"], "lang": ["en"]}})
    values = tool_of(p, "x").spec.query
    assert isinstance(values["api_key"][0], Secret) and values["api_key"][0].reveal() == "k-very-secret-123"
    assert "k-very-secret-123" in policy_secrets(p)


def test_rest_tools_and_llm_route_exclude_each_other():
    with pytest.raises(ValidationError, match="rest_tools and ai exclude each other"):
        one_tool({"name": "x", "description": "x"}, ai={"route_type": "llm/v1/chat"})
