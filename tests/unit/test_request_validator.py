"""Kong's request-validator (addons/mcpgw/request_validator/): settings refused at load, each check
and Kong's 400 answers, and the decK translation of Kong doc case 35."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import pytest
import yaml
from mitmproxy import http
from mitmproxy.test import tflow

from mcpgw.context import FlowContext
from mcpgw.policy.deck import translate_deck
from mcpgw.policy.loader import PolicyError
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.request_validator import phase
from mcpgw.request_validator.compile import parse_media_type
from mcpgw.request_validator.settings import RequestValidatorSettings
from mcpgw.routing import RouteTable

CASE_35 = Path(__file__).parents[2].parent / "shared" / "kong-docs" / "cases" / "35-deck-fixture-dump-acl-defaults.yaml"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}
JSONRPC_SCHEMA = json.dumps({"type": "object", "required": ["jsonrpc", "method"],
                             "properties": {"jsonrpc": {"enum": ["2.0"]}, "method": {"type": "string"}}})
_versions = itertools.count(1)


def settings(**config) -> RequestValidatorSettings:
    return RequestValidatorSettings.model_validate(config)


def judge(config: dict, *, query: str = "", headers: list[tuple[str, str]] | None = None,
          body: bytes | dict | None = INIT, method: str = "POST") -> http.Response | None:
    """The phase's answer for one request on a route with `config`."""
    policy = Policy.model_validate({"services": {"s": {"url": "http://127.0.0.1:9/mcp"}},
                                    "routes": {"r": {"service": "s", "paths": ["/mcp"], "request_validator": config}}})
    snap = Snapshot(policy, RouteTable(policy), "test", next(_versions), "test", ())
    content = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    fields = [(b"host", b"localhost:8000")]
    for name, value in [("content-type", "application/json")] if headers is None else headers:
        fields.append((name.encode(), value.encode()))
    request = http.Request.make(method, "http://localhost:8000/mcp" + query, content, http.Headers(fields))
    flow = tflow.tflow(req=request)
    ctx = FlowContext(snap, "gateway", snap.routes.match_gateway("/mcp"), frozenset({"localhost"}), "localhost:8000", "http")
    return phase.validate_request(ctx, flow)


def answer(response: http.Response | None) -> tuple[int, object] | None:
    return None if response is None else (response.status_code, json.loads(response.content)["message"])


# --- settings: refused at load, with the reason ----------------------------------------------------


@pytest.mark.parametrize("config, message", [
    ({}, "one of body_schema or parameter_schema must be specified"),
    ({"body_schema": "[", "version": "kong"}, "body_schema is not JSON"),
    ({"body_schema": '[{"name": {"type": "string", "match": "^%a+$"}}]'}, "Lua-pattern validators are not implemented"),
    ({"body_schema": '[{"name": {"type": "string", "default": "x"}}]'}, "body_schema.name.default: not implemented"),
    ({"body_schema": '[{"name": {"type": "set"}}]'}, "a field needs a type"),
    ({"body_schema": '[{"n": {"type": "array"}}]'}, "an array needs elements"),
    ({"body_schema": '[{"n": {"type": "boolean", "between": [1, 2]}}]'}, "between: two numbers, on an integer"),
    ({"body_schema": '{"type": "nope"}', "version": "draft4"}, "is not a valid draft4 schema"),
    ({"body_schema": "{}", "version": "draft3"}, "Input should be"),
    ({"parameter_schema": [{"in": "path", "name": "id", "required": True}]}, "in: path needs a named capture"),
    ({"parameter_schema": [{"in": "query", "name": "q", "required": True, "style": "deepObject",
                            "schema": '{"type": "string"}'}]}, "style 'deepObject' is not implemented in query"),
    ({"parameter_schema": [{"in": "query", "name": "q", "required": True, "schema": '{"type": "object"}'}]},
     "object parameters are not implemented"),
    ({"parameter_schema": [{"in": "query", "name": "q", "required": True, "schema": "{}"}]}, "needs a top-level type"),
    ({"body_schema": "[]", "allowed_content_types": ["json"]}, "'json' is not a media type"),
])
def test_settings_kong_would_apply_otherwise_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        settings(**config)


def test_defaults_are_kongs():
    s = settings(body_schema="[]")
    assert (s.version, s.allowed_content_types, s.content_type_parameter_validation, s.verbose_response) == (
        "kong", ["application/json"], True, False)


# --- content type ------------------------------------------------------------------------------------


def test_media_types_parse_strictly():
    assert parse_media_type("Application/JSON; Charset=UTF-8") == ("application", "json", {"charset": "utf-8"})
    assert parse_media_type('text/plain; a="x;y"') == ("text", "plain", {"a": "x;y"})
    for bad in ("application/json, text/plain", "application/json; charset=utf-8; charset=latin1",
                "application/json;", "application/json garbage", "*/*", "application", ""):
        assert parse_media_type(bad) is None, bad


@pytest.mark.parametrize("content_type, allowed", [
    ("application/json", True), ("APPLICATION/Json", True),
    ("application/json; charset=utf-8", False),  # a parameter the allowed type does not have
    ("text/plain", False), (None, False),
    ("application/json, text/plain", False),  # a list, not one type: which would the upstream read?
    ("application/json;charset=utf-8;charset=latin1", False),
    ("application/jsonx", False), ("application/json\x00", False),
])
def test_content_type_is_one_of_the_allowed(content_type, allowed):
    headers = [] if content_type is None else [("content-type", content_type)]
    verbose = answer(judge({"body_schema": "[]", "verbose_response": True}, headers=headers, body=b""))
    quiet = answer(judge({"body_schema": "[]"}, headers=headers, body=b""))
    assert (verbose, quiet) == ((None, None) if allowed else ((400, "specified Content-Type is not allowed"),
                                                               (400, "request body doesn't conform to schema")))


def test_two_content_type_headers_are_refused():
    headers = [("content-type", "text/plain"), ("content-type", "application/json")]
    assert answer(judge({"body_schema": "{}", "version": "draft4"}, headers=headers)) == (
        400, "request body doesn't conform to schema")


def test_content_type_parameters():
    charset = {"body_schema": "{}", "version": "draft4", "allowed_content_types": ["application/json; charset=UTF-8"]}
    assert judge(charset, headers=[("content-type", "application/json; CHARSET=utf-8")]) is None
    assert judge(charset, headers=[("content-type", "application/json")]) is not None
    assert judge(charset, headers=[("content-type", "application/json; charset=utf-8; x=1")]) is not None
    loose = {**charset, "allowed_content_types": ["application/json"], "content_type_parameter_validation": False}
    assert judge(loose, headers=[("content-type", "application/json; charset=latin1")]) is None
    wildcard = {**charset, "allowed_content_types": ["application/*"]}
    assert judge(wildcard, headers=[("content-type", "application/merge-patch+json")]) is None


def test_content_type_is_judged_only_with_a_body_schema():
    params = {"parameter_schema": [{"in": "query", "name": "q", "required": False}]}
    assert judge(params, headers=[("content-type", "text/plain")], body=b"hi") is None


# --- body ----------------------------------------------------------------------------------------------


def test_kong_schema_of_case_35_admits_only_an_empty_record():
    """body_schema '[]' (case 35): Kong's schema library reports every field it does not declare."""
    config = {"body_schema": "[]", "verbose_response": True}
    assert judge(config, body=b"") is None and judge(config, body={}) is None
    assert answer(judge(config)) == (400, {k: "unknown field" for k in INIT})
    assert answer(judge({"body_schema": "[]"})) == (400, "request body doesn't conform to schema")


def test_kong_schema_types_and_validators():
    fields = [{"jsonrpc": {"type": "string", "required": True, "one_of": ["2.0"]}},
              {"id": {"type": "integer", "between": [1, 10]}},
              {"method": {"type": "string", "starts_with": "tools/", "len_max": 20}},
              {"params": {"type": "record", "fields": [{"name": {"type": "string", "len_min": 1}},
                                                       {"tags": {"type": "array", "elements": {"type": "string"}}},
                                                       {"meta": {"type": "map", "keys": {"type": "string"},
                                                                 "values": {"type": "boolean"}}}]}}]
    config = {"body_schema": json.dumps(fields), "verbose_response": True}
    good = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "a", "tags": ["x"], "meta": {"k": True}}}
    assert judge(config, body=good) is None
    for change, error in (
        ({"jsonrpc": "1.0"}, {"jsonrpc": "expected one of: 2.0"}),
        ({"jsonrpc": None}, {"jsonrpc": "required field missing"}),
        ({"id": 11}, {"id": "value should be between 1 and 10"}),
        ({"id": "3"}, {"id": "expected an integer"}),
        ({"id": True}, {"id": "expected an integer"}),
        ({"method": "initialize"}, {"method": "should start with: tools/"}),
        ({"params": {"name": ""}}, {"params": {"name": "length must be at least 1"}}),
        ({"params": {"tags": ["x", 2]}}, {"params": {"tags": {"2": "expected a string"}}}),
        ({"params": {"meta": {"k": "yes"}}}, {"params": {"meta": {"k": "expected a boolean"}}}),
        ({"params": {"other": 1}}, {"params": {"other": "unknown field"}}),
    ):
        assert answer(judge(config, body={**good, **change})) == (400, error), change
    assert answer(judge(config, body=b"[1]")) == (400, "expected a record")


def test_draft4_body_and_what_is_not_json():
    config = {"version": "draft4", "body_schema": JSONRPC_SCHEMA, "verbose_response": True}
    assert judge(config) is None
    status, message = answer(judge(config, body={"jsonrpc": "1.0", "method": "x"}))
    assert status == 400 and message.startswith("property jsonrpc failed enum") and "1.0" not in message  # no echo
    assert answer(judge(config, body={"jsonrpc": "2.0"})) == (400, "missing a required property (jsonrpc, method)")
    for bad in (b"{", b'{"jsonrpc": "2.0", "method": "a", "method": "b"}', b"[" * 100000):  # repeated key: which wins?
        assert answer(judge(config, body=bad)) == (400, "request body is not valid JSON")
    quiet = {**config, "verbose_response": False}
    assert answer(judge(quiet, body={"jsonrpc": "1.0", "method": "x"})) == (400, "request body doesn't conform to schema")


def test_other_allowed_types_pass_unjudged_as_in_kong():
    config = {"version": "draft4", "body_schema": JSONRPC_SCHEMA, "allowed_content_types": ["application/json", "text/plain"]}
    assert judge(config, headers=[("content-type", "text/plain")], body=b"not json") is None
    assert judge(config, headers=[("content-type", "application/vnd.x+json")], body=b"{}") is not None  # not allowed


def test_array_length_compat():
    schema = json.dumps({"type": "object", "properties": {"a": {"type": "array", "maxLength": 1}}})
    config = {"version": "draft4", "body_schema": schema}
    assert judge(config, body={"a": [1, 2]}) is not None
    assert judge({**config, "array_length_compat": False}, body={"a": [1, 2]}) is None


# --- parameters -------------------------------------------------------------------------------------------


def param(location: str = "query", schema: dict | None = None, **more) -> dict:
    entry = {"in": location, "name": "param-test", "required": False, **more}
    if schema is not None:
        entry["schema"] = json.dumps(schema)
    return {"parameter_schema": [entry], "verbose_response": True}


def test_query_parameter_types_and_kongs_messages():
    config = param(schema={"type": "integer", "maximum": 10})
    assert judge(config, query="?param-test=7") is None and judge(config) is None
    assert answer(judge(config, query="?param-test=abc")) == (
        400, "query 'param-test' validation failed, [error] wrong type: expected integer")
    assert answer(judge(config, query="?param-test=11")) == (
        400, "query 'param-test' validation failed, [error] failed maximum: 10")
    quiet = {**config, "verbose_response": False}
    assert answer(judge(quiet, query="?param-test=abc")) == (400, "request param doesn't conform to schema")
    required = param(schema={"type": "boolean"}, required=True)
    assert judge(required, query="?param-test=true") is None
    assert answer(judge(required)) == (400, "query 'param-test' validation failed, [error] required parameter missing")


def test_duplicate_query_values_are_each_judged():
    """?param-test=1&param-test=x: an upstream reading either one gets a judged value."""
    config = param(schema={"type": "integer"})
    assert judge(config, query="?param-test=1&param-test=2") is None
    assert judge(config, query="?param-test=1&param-test=x") is not None
    assert judge(config, query="?param-test=x&param-test=1") is not None
    assert judge(config, query="?param%2Dtest=x") is not None  # percent-encoded name: the same parameter


def test_query_names_are_case_sensitive_headers_are_not():
    """As in Kong: Param-Test is another query parameter (a required one is then missing), but
    X-Param-Test is the same header however it is spelt."""
    required = param(schema={"type": "integer"}, required=True)
    assert judge(required, query="?Param-Test=1") is not None
    header = param("header", {"type": "integer"}, name="X-Param-Test", required=True)
    assert judge(header, headers=[("content-type", "application/json"), ("x-param-test", "4")]) is None
    assert judge(header, headers=[("X-PARAM-TEST", "no")]) is not None
    assert judge(header, headers=[("x-param-test", "4"), ("X-Param-Test", "no")]) is not None  # each header line


def test_array_parameters():
    form = param(schema={"type": "array", "items": {"type": "integer"}, "maxItems": 2})
    assert judge(form, query="?param-test=1&param-test=2") is None
    assert judge(form, query="?param-test=1&param-test=2&param-test=3") is not None
    assert judge(form, query="?param-test=1&param-test=b") is not None
    not_exploded = param(schema={"type": "array", "items": {"type": "integer"}}, explode=False)
    assert judge(not_exploded, query="?param-test=1,2") is None and judge(not_exploded, query="?param-test=1,b")
    header = param("header", {"type": "array", "items": {"type": "integer"}}, name="X-Ids")
    assert judge(header, headers=[("x-ids", "1,2,3")]) is None and judge(header, headers=[("x-ids", "1,a")])


def test_parameters_are_judged_before_the_content_type():
    config = {**param(schema={"type": "integer"}), "body_schema": "[]"}
    assert answer(judge(config, query="?param-test=x", headers=[("content-type", "text/plain")]))[1].startswith("query")


# --- decK: case 35 and scopes ------------------------------------------------------------------------------


def case_35() -> dict:
    """Kong doc case 35 as a decK document, plus one consumer declaring the acl group 'example': the
    gateway refuses a deny list naming a group nothing declares (governance/access_settings.py: such a
    name would silently admit everyone), which Kong accepts. No plugin of case 35 authenticates, so
    this consumer can never be the caller: the acl answers as it would without it."""
    doc = yaml.safe_load(CASE_35.read_text())
    doc["consumers"] = [{"username": "declares-example", "acls": [{"group": "example"}]}]
    return doc



def test_case_35_translates_with_kongs_options():
    native = translate_deck(case_35(), "case35.yaml", env={})
    assert native["routes"]["r1"]["request_validator"] == {
        "allowed_content_types": ["application/json"], "body_schema": "[]", "content_type_parameter_validation": True,
        "parameter_schema": [{"explode": True, "in": "query", "name": "param-test", "required": False,
                              "schema": '{"type":"string"}', "style": "form"}],
        "verbose_response": True, "version": "kong"}
    assert native["routes"]["r1"]["access"]["deny"] == ["example"]


@pytest.mark.parametrize("scope", ["route", "global"])
def test_route_and_global_scope(scope):
    doc = case_35()
    service = doc["services"][0]
    plugin = service.pop("plugins")[1]
    plugin["config"]["verbose_response"] = False
    if scope == "route":
        service["routes"][0]["plugins"] = [plugin]
    else:
        doc["plugins"] = [plugin]
    native = translate_deck(doc, "kong.yaml", env={})
    assert native["routes"]["r1"]["request_validator"]["verbose_response"] is False


def test_deck_refusals_are_located_at_the_plugin():
    doc = case_35()
    doc["services"][0]["plugins"][1]["config"]["parameter_schema"][0]["style"] = "deepObject"
    with pytest.raises(PolicyError) as refused:
        translate_deck(doc, "kong.yaml", env={})
    assert "style 'deepObject' is not implemented" in str(refused.value)


# --- where the phase runs, and the body as the upstream would read it --------------------------------------


def test_phase_order_is_kongs_priority_order():
    """request-validator (999) after every identity phase (key-auth 1250, openid-connect 1050,
    ai-mcp-oauth2 1015: header phases), before acl (950) and the JSON-RPC parsing (ai-mcp-proxy, 820)."""
    from mcpgw import inbound, pipeline
    from mcpgw.governance import access

    phases = list(pipeline.REQUEST_PHASES)
    assert phases.index(phase.validate_request) < phases.index(inbound.parse_client_messages) < phases.index(
        access.check_route_access)
    ai = list(pipeline.AI_REQUEST_PHASES)
    assert ai.index(phase.validate_request) < ai.index(access.check_route_access)
    assert phase.validate_request not in pipeline.HEADER_PHASES  # it needs the body


def test_a_request_without_content_type_is_refused_with_a_body_schema():
    """As in Kong: the SSE GET and the session DELETE carry no Content-Type."""
    for method in ("GET", "DELETE"):
        assert answer(judge({"body_schema": "[]", "verbose_response": True}, headers=[], body=None, method=method)) == (
            400, "specified Content-Type is not allowed")


def test_the_body_is_judged_as_sent_never_decoded():
    """As Kong reads it: a gzip body is not JSON (and nothing is inflated: no compression bomb).
    Request.make encodes the content by its Content-Encoding, so the wire holds gzip."""
    config = {"version": "draft4", "body_schema": JSONRPC_SCHEMA, "verbose_response": True}
    packed = [("content-type", "application/json"), ("content-encoding", "gzip")]
    assert answer(judge(config, headers=packed, body=INIT)) == (400, "request body is not valid JSON")
    assert answer(judge(config, body=b"\xff\xfe{}")) == (400, "request body is not valid JSON")


def test_compiled_once_per_policy_version(monkeypatch):
    from mcpgw.request_validator import compile as compiled

    calls = []
    original = compiled.compile_plan
    monkeypatch.setattr(phase, "compile_plan", lambda s: calls.append(s) or original(s))
    policy = Policy.model_validate({"services": {"s": {"url": "http://127.0.0.1:9/mcp"}}, "routes": {
        "r": {"service": "s", "paths": ["/mcp"], "request_validator": {"body_schema": "[]"}}}})
    for _ in range(3):
        phase._plans(policy)
    assert len(calls) == 1


def test_deck_ordering_and_consumer_scope():
    """`ordering` may ask for what the fixed order does (before acl), not the reverse; an instance
    scoped to a consumer is refused (the gateway applies it to routes only)."""
    doc = case_35()
    validator = doc["services"][0]["plugins"][1]
    validator["ordering"] = {"before": {"access": ["acl"]}}
    assert translate_deck(copy.deepcopy(doc), "kong.yaml", env={})["routes"]["r1"]["request_validator"]
    validator["ordering"] = {"after": {"access": ["acl"]}}
    with pytest.raises(PolicyError, match="request-validator cannot run after acl"):
        translate_deck(copy.deepcopy(doc), "kong.yaml", env={})
    del validator["ordering"]
    doc["consumers"][0]["plugins"] = [copy.deepcopy(validator)]
    with pytest.raises(PolicyError, match="plugins scoped to a consumer or consumer group are supported for"):
        translate_deck(doc, "kong.yaml", env={})
