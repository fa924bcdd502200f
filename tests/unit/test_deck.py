"""Kong decK files as policies (policy/deck.py, policy/deck_plugins.py): every supported construct,
every refusal with its message, decK's env substitution, the recipe of seeds/003 and the examples
of seeds/000 and 002, and the converter."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mitmproxy import http
from mitmproxy.test import tflow

from mcpgw import pipeline
from mcpgw.context import FlowContext
from mcpgw.policy.deck import DeckSettings, convert_file, kong_id, translate_deck
from mcpgw.policy.loader import PolicyError, load_policy_file
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.routing import RouteTable

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "tests" / "data" / "kong-recipe.yaml"
RECIPE_ENV = {
    "DECK_KONNECT_MCP_HOST": "us.mcp.konghq.com",
    "DECK_KONNECT_MCP_TOKEN": "kpat_stored_credential",
    "DECK_OAUTH_AUTH_SERVER": "https://idp.example.com/oauth2/default",
    "DECK_OAUTH_INTROSPECTION_URL": "https://idp.example.com/oauth2/default/v1/introspect",
    "DECK_OAUTH_CLIENT_ID": "kong-introspector",
    "DECK_OAUTH_CLIENT_SECRET": "introspection-secret",
}
UPSTREAM = "http://127.0.0.1:8931/mcp"
_versions = itertools.count(1)


def deck(*routes_plugins: dict, consumers: list | None = None, groups: list | None = None, **extra) -> dict:
    """A decK file with one service and one route carrying `routes_plugins`."""
    doc = {
        "_format_version": "3.0",
        "consumer_groups": groups if groups is not None else [{"name": "admin"}, {"name": "developer"}],
        "consumers": consumers if consumers is not None else [
            {"username": "admin-user", "keyauth_credentials": [{"key": "admin-api-key"}], "groups": [{"name": "admin"}]},
            {"username": "dev-user", "custom_id": "okta|dev", "keyauth_credentials": [{"key": "dev-api-key"}],
             "groups": [{"name": "developer"}]},
        ],
        "services": [{"name": "mcp", "url": UPSTREAM, "routes": [{"name": "r", "paths": ["/mcp"],
                                                                  "plugins": copy.deepcopy(list(routes_plugins))}]}],
    }
    doc.update(extra)
    return doc


def translate(doc: dict, env: dict | None = None, **kw) -> dict:
    return translate_deck(copy.deepcopy(doc), "kong.yaml", env=env or {}, **kw)


def problems(doc: dict, env: dict | None = None) -> list[str]:
    with pytest.raises(PolicyError) as refused:
        translate(doc, env)
    assert refused.value.source == "kong.yaml"
    return refused.value.problems


def only_problem(doc: dict, env: dict | None = None) -> str:
    found = problems(doc, env)
    assert len(found) == 1, found
    return found[0]


def route(doc: dict, name: str = "r") -> dict:
    return translate(doc)["routes"][name]


KEY_AUTH = {"name": "key-auth", "config": {"key_names": ["apikey"], "hide_credentials": True}}
OAUTH = {"name": "ai-mcp-oauth2", "config": {
    "resource": "https://gw.example.com/mcp", "authorization_servers": ["https://idp.example.com"],
    "introspection_endpoint": "https://idp.example.com/introspect", "client_id": "kong", "client_secret": "s",
    "passthrough_credentials": False}}
SWAP = {"name": "request-transformer-advanced", "config": {"add": {"headers": ["Authorization:Bearer stored"]}}}
DATAKIT = {"name": "datakit", "config": {"nodes": [
    {"name": "CHECK_AUTH", "type": "jq", "inputs": {"headers": "request.headers"},
     "jq": ".headers.Authorization? != null or .headers.authorization? != null"},
    {"name": "AUTH_BRANCH", "type": "branch", "input": "CHECK_AUTH", "else": ["UNAUTH_RESPONSE", "UNAUTH_EXIT"]},
    {"name": "UNAUTH_RESPONSE", "type": "static", "values": {
        "content-type": "application/json",
        "www-authenticate": 'Bearer resource_metadata="https://gw.example.com/.well-known/oauth-protected-resource/mcp", '
                            'error="invalid_token"',
        "BODY": '{"message": "Unauthorized"}'}},
    {"name": "UNAUTH_EXIT", "type": "exit", "status": 401,
     "inputs": {"body": "UNAUTH_RESPONSE.BODY", "headers": "UNAUTH_RESPONSE"}},
]}}


# --- the recipe (seeds/003) ----------------------------------------------------------------------


@pytest.fixture
def recipe_env(monkeypatch):
    for name, value in RECIPE_ENV.items():
        monkeypatch.setenv(name, value)
    return RECIPE_ENV


def test_recipe_loads_unchanged(recipe_env):
    policy, _, _ = load_policy_file(RECIPE)
    assert list(policy.routes) == ["github-mcp", "konnect-mcp"]  # the PRM route is folded into github-mcp
    assert list(policy.services) == ["github-mcp-service", "konnect-mcp-service"]
    assert policy.services["konnect-mcp-service"].url == "https://us.mcp.konghq.com"
    assert set(policy.consumers) == {"admin-user", "dev-user"} and policy.consumers["dev-user"].groups == ["developer"]

    github = policy.routes["github-mcp"]
    assert github.paths == ["/github-mcp"] and github.strip_path
    assert github.key_auth.key_names == ["apikey"] and github.key_auth.hide_credentials
    assert (github.prm.challenge, github.prm.mode) == (True, "rewrite")
    assert github.prm.upstream_url == "https://localhost/.well-known/oauth-protected-resource/mcp"
    assert github.prm.resource == "https://localhost:8443/github-mcp"
    assert github.acl.consumer_identifier == "username" and github.acl.include_consumer_groups
    assert github.acl.default_acl[0].deny == ["developer"]
    assert [(t.name, t.acl.allow) for t in github.acl.tools][:1] == [("search_repositories", ["admin", "developer"])]
    assert len(github.acl.tools) == 11 and github.audit.log_payloads
    assert github.credentials is None  # the GitHub token passes through

    konnect = policy.routes["konnect-mcp"]
    assert konnect.paths == ["/konnect-mcp"]  # its well-known path is served by the gateway
    oauth = konnect.oauth
    assert oauth.introspection_endpoint == RECIPE_ENV["DECK_OAUTH_INTROSPECTION_URL"]
    assert oauth.client_secret.reveal() == "introspection-secret" and not oauth.passthrough_credentials
    assert (oauth.consumer_claim, oauth.consumer_by, oauth.consumer_optional) == (["sub"], ["username", "custom_id"], True)
    assert konnect.credentials.mode == "inject"
    assert [(n, v.reveal()) for n, v in konnect.credentials.add.headers] == [("Authorization", "Bearer kpat_stored_credential")]
    assert konnect.cors.origins == ["*"] and policy.gateway.urls == ["https://localhost:8443"]


def test_recipe_needs_its_variables():
    refused = problems(yaml.safe_load(RECIPE.read_text()), {})
    assert len(refused) == 6
    assert refused[0] == ('services[2].host: environment variable DECK_KONNECT_MCP_HOST is not set '
                          '(${{ env "DECK_KONNECT_MCP_HOST" }})')


def test_converter_output_behaves_like_the_deck_file(recipe_env, tmp_path):
    native_text = convert_file(RECIPE, env=recipe_env)
    assert "{env://DECK_KONNECT_MCP_TOKEN}" in native_text and "{env://DECK_OAUTH_CLIENT_SECRET}" in native_text
    assert "kpat_stored_credential" not in native_text and "introspection-secret" not in native_text
    (tmp_path / "native.yaml").write_text(native_text)
    from_native, _, _ = load_policy_file(tmp_path / "native.yaml")
    from_deck, _, _ = load_policy_file(RECIPE)
    assert from_native == from_deck  # secrets compare by value

    inline = convert_file(RECIPE, env=recipe_env, inline_secrets=True)
    assert "Authorization:Bearer kpat_stored_credential" in inline
    assert yaml.safe_load(inline) == translate_deck(yaml.safe_load(RECIPE.read_text()), str(RECIPE), env=recipe_env)


def test_converter_script(recipe_env, tmp_path):
    script = [sys.executable, str(ROOT / "scripts" / "deck2policy.py")]
    done = subprocess.run([*script, str(RECIPE), "-o", str(tmp_path / "p.yaml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "github-mcp" in yaml.safe_load((tmp_path / "p.yaml").read_text())["routes"]
    usage = subprocess.run([*script, "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--set mcp_policy=kong.yaml" in usage.stdout
    (tmp_path / "bad.yaml").write_text('_format_version: "3.0"\nservices: [{name: s, url: "http://x", '
                                       'plugins: [{name: proxy-cache}]}]\n')
    failed = subprocess.run([*script, str(tmp_path / "bad.yaml")], capture_output=True, text=True)
    assert failed.returncode == 1 and "services[0].plugins[0] (name: proxy-cache) (line 2)" in failed.stderr


# --- seeds/000 and seeds/002: key-auth on a service ----------------------------------------------


SEED_000 = """
_format_version: "3.0"
services:
- name: example-clean-service
  url: http://127.0.0.1:8931/anything
  routes:
  - name: example-clean-route
    paths: [/anything]
plugins:
- name: key-auth
  service: example-clean-service
  config:
    key_names:
    - apikey
consumers:
- username: alex
  keyauth_credentials:
  - key: hello_world
"""

SEED_002 = """
_format_version: "3.0"
services:
- name: mcp-service
  url: http://127.0.0.1:8931/mcp
  routes:
  - name: mcp-route
    paths: [/llm/v1/chat]
plugins:
- name: key-auth
  service: mcp-service
  config:
    key_names:
      - apikey
consumers:
- username: chat-client
  keyauth_credentials:
    - key: secret-chat-key
"""


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


async def run_request(policy: Policy, path: str, headers: dict[str, str], message: dict | None = None,
                      method: str = "POST") -> tuple[FlowContext, http.HTTPFlow, http.Response | None]:
    snap = Snapshot(policy, RouteTable(policy), "test", next(_versions), "test", ())
    body = json.dumps(message or INITIALIZE).encode() if method == "POST" else b""
    fields = [(b"host", b"localhost:8000"), (b"content-type", b"application/json"),
              (b"accept", b"application/json, text/event-stream"), *((k.encode(), v.encode()) for k, v in headers.items())]
    flow = tflow.tflow(req=http.Request.make(method, "http://localhost:8000" + path, body, http.Headers(fields)))
    ctx = FlowContext(snap, "gateway", snap.routes.match_gateway(path), frozenset({"localhost"}), "localhost:8000", "http")
    return ctx, flow, await pipeline.run(pipeline.HEADER_PHASES + pipeline.REQUEST_PHASES, ctx, flow)


@pytest.mark.parametrize("text, path, key", [(SEED_000, "/anything", "hello_world"),
                                             (SEED_002, "/llm/v1/chat", "secret-chat-key")], ids=["seed-000", "seed-002"])
async def test_seed_key_auth_validations(tmp_path, text, path, key):
    (tmp_path / "kong.yaml").write_text(text)
    policy, _, _ = load_policy_file(tmp_path / "kong.yaml")
    ctx, flow, answer = await run_request(policy, path, {"apikey": key})
    assert answer is None and ctx.upstream_set and flow.request.port == 8931  # 200: on its way to the upstream
    assert "apikey" in flow.request.headers  # hide_credentials is false by default, as in Kong
    for headers, message in (({"apikey": "another_key"}, "Unauthorized"), ({}, "No API key found in request")):
        ctx, flow, answer = await run_request(policy, path, headers)
        assert (answer.status_code, json.loads(answer.content)) == (401, {"message": message})
        assert not ctx.upstream_set


def test_seed_002_other_plugins_are_each_refused():
    doc = yaml.safe_load(SEED_002)
    doc["plugins"] += [
        {"name": "ai-proxy-advanced", "service": "mcp-service", "config": {"targets": []}},
        {"name": "ai-proxy", "consumer": "chat-client", "config": {"route_type": "llm/v1/chat"}},
        {"name": "ai-rate-limiting-advanced", "service": "mcp-service", "config": {"strategy": "local"}},
    ]
    # ai-proxy(-advanced) are translated (tests/unit/test_ai_deck.py): here an empty target list is refused
    found = sorted(problems(doc))
    assert len(found) == 2
    assert found[0].startswith("plugins[1] (name: ai-proxy-advanced).config.targets") and "needs targets" in found[0]
    assert found[1].startswith("plugins[3] (name: ai-rate-limiting-advanced)")  # translated (test_limits_deck.py):
    assert "needs llm_providers" in found[1]  # here one without its llm_providers is refused


# --- entities ----------------------------------------------------------------------------------------


def test_services_from_host_port_protocol_path():
    doc = deck()
    doc["services"] = [
        {"name": "a", "host": "api.example.com", "port": 443, "protocol": "https", "path": "/mcp", "tags": ["t"],
         "connect_timeout": 5000, "read_timeout": 90000, "write_timeout": 60000, "retries": 5, "enabled": True,
         "routes": [{"paths": ["/a"]}]},
        {"name": "b", "host": "mcp.internal", "routes": [{"paths": ["/b"]}]},  # Kong's defaults: http, port 80
        {"name": "c", "host": "::1", "port": "8080", "routes": [{"paths": ["/c"]}]},
        {"name": "d", "url": "https://x.example.com:8443/mcp/", "connect_timeout": 60000, "routes": [{"paths": ["/d"]}]},
        {"name": "off", "url": "http://off", "enabled": False, "routes": [{"paths": ["/off"]}]},
    ]
    native = translate(doc)
    assert native["services"] == {"a": {"url": "https://api.example.com/mcp"},  # timeouts: accepted, no effect
                                  "b": {"url": "http://mcp.internal"}, "c": {"url": "http://[::1]:8080"},
                                  "d": {"url": "https://x.example.com:8443/mcp/"}}
    assert list(native["routes"]) == ["a-0", "b-0", "c-0", "d-0"]  # unnamed: service name and index


def test_route_fields():
    doc = deck()
    doc["services"][0]["routes"] = [{
        "name": "r", "paths": ["/mcp", "/mcp2"], "strip_path": False, "methods": ["get", "POST"],
        "protocols": ["http", "https"], "hosts": ["MCP.example.com"], "preserve_host": False,
        "request_buffering": False, "response_buffering": True, "tags": ["x"], "regex_priority": 0,
        "path_handling": "v0", "https_redirect_status_code": 426, "id": "5f2a"}]
    doc["routes"] = [{"name": "top", "service": {"name": "mcp"}, "paths": ["/top"], "hosts": ["mcp.example.com"]}]
    doc["_info"] = {"select_tags": ["secure-external-mcp-gateway-recipe"]}
    doc["_konnect"] = {"control_plane_name": "recipe"}
    native = translate(doc)
    assert native["routes"]["r"] == {"service": "mcp", "paths": ["/mcp", "/mcp2"], "strip_path": False,
                                     "methods": ["GET", "POST"]}
    assert native["routes"]["top"] == {"service": "mcp", "paths": ["/top"]}
    assert native["gateway"]["hosts"] == ["mcp.example.com"]


def test_route_without_paths_matches_everything():
    doc = deck()
    doc["services"][0]["routes"] = [{"name": "r", "methods": ["POST"]}]
    assert route(doc)["paths"] == ["/"]


def test_consumers_and_groups():
    doc = deck(groups=[{"name": "admin", "tags": ["t"]}, {"name": "ops"}], consumers=[
        {"username": "alice", "id": "6f1c", "custom_id": "okta|alice", "tags": ["t"],
         "keyauth_credentials": [{"key": "k1", "id": "c1", "tags": ["t"]}, {"key": "k2"}],
         "groups": [{"name": "admin"}, "ops"]},
        {"username": "bob"}])
    native = translate(doc)
    assert native["consumer_groups"] == ["admin", "ops"]
    second_key = kong_id("keyauth_credentials", "6f1c:1")  # Kong's would be random: a stable one of no secret
    assert native["consumers"] == {"alice": {"id": "6f1c", "custom_id": "okta|alice", "groups": ["admin", "ops"],
                                             "keys": [{"key": "k1", "id": "c1"}, {"key": "k2", "id": second_key}]},
                                   "bob": {"id": kong_id("consumers", "bob")}}
    # Kong's declarative config names a consumer without an id by a UUID v5 of its username
    # (spec/02-integration/04-admin_api/15-off_spec.lua: my-user is 4b1b701d-...).
    assert kong_id("consumers", "my-user") == "4b1b701d-de2b-5588-9aa2-3b97061d9f52"


# --- plugins -------------------------------------------------------------------------------------------


def test_scopes_and_precedence():
    doc = deck({"name": "cors", "config": {"origins": ["https://route.example"]}})
    doc["services"][0]["routes"].append({"name": "other", "paths": ["/other"]})
    doc["services"][0]["plugins"] = [{"name": "cors", "config": {"origins": ["https://service.example"]}}]
    doc["plugins"] = [
        {"name": "cors", "config": {"origins": ["https://global.example"]}},
        {"name": "key-auth", "route": "other", "config": {"key_names": ["x-key"]}},
        {"name": "key-auth", "service": "mcp", "instance_name": "service-keys", "tags": ["t"], "id": "p1",
         "protocols": ["grpc", "grpcs", "http", "https"], "config": {"realm": "mcp"}},
    ]
    native = translate(doc)["routes"]
    assert native["r"]["cors"]["origins"] == ["https://route.example"]  # route over service over global
    assert native["other"]["cors"]["origins"] == ["https://service.example"]
    assert native["other"]["key_auth"] == {"key_names": ["x-key"]}  # a route-scoped top-level plugin wins
    assert native["r"]["key_auth"] == {"realm": "mcp"}


def test_disabled_plugins_are_dropped():
    doc = deck({"name": "rate-limiting", "enabled": False, "config": {"minute": 1}},
               {**KEY_AUTH, "enabled": "false"})
    assert "key_auth" not in route(doc)


def test_kong_nulls_and_inert_defaults_are_accepted():
    """What `deck gateway dump` writes: every option, unset ones as null, defaults spelled out."""
    doc = deck({"name": "key-auth", "config": {
        "anonymous": None, "hide_credentials": False, "key_in_body": False, "key_in_header": True, "key_in_query": True,
        "key_names": ["apikey"], "realm": None, "run_on_preflight": True,
        "identity_realms": [{"id": None, "region": None, "scope": "cp"}]}},
        {"name": "cors", "config": {"origins": None, "credentials": False, "private_network": False,
                                    "allow_origin_absent": True, "max_age": None, "preflight_continue": False}})
    native = route(doc)
    assert native["key_auth"] == {"hide_credentials": False, "key_in_body": False, "key_in_header": True,
                                  "key_in_query": True, "key_names": ["apikey"], "run_on_preflight": True}
    assert native["cors"] == {"credentials": False, "preflight_continue": False}


def test_ai_mcp_proxy():
    doc = deck(KEY_AUTH, {"name": "ai-mcp-proxy", "config": {
        "mode": "passthrough-listener", "consumer_identifier": "custom_id", "include_consumer_groups": True,
        "acl_attribute_type": "consumer", "server": {"forward_client_headers": True, "timeout": 10000},
        "default_acl": [{"scope": "tools", "allow": ["admin"]}],
        "tools": [{"name": "search_code", "description": "d", "annotations": {"read_only_hint": True},
                   "acl": {"allow": ["okta|dev"]}}],
        "logging": {"log_payloads": False, "log_statistics": True, "log_audits": True},
        "max_request_body_size": 4 * 1024 * 1024}})
    native = translate(doc)
    assert native["routes"]["r"]["acl"] == {
        "consumer_identifier": "custom_id", "include_consumer_groups": True,
        "default_acl": [{"scope": "tools", "allow": ["admin"]}],
        "tools": [{"name": "search_code", "description": "d", "acl": {"allow": ["okta|dev"]}}],
        "refuse_without_tools": True, "max_request_body_size": 4 * 1024 * 1024}
    assert "audit" not in native["routes"]["r"]
    assert native["gateway"]["max_body_size"] == 4 * 1024 * 1024  # the gateway-wide limit applies first


def test_ai_mcp_proxy_without_acl_settings_only_logs():
    doc = deck({"name": "ai-mcp-proxy", "config": {"mode": "passthrough-listener", "max_request_body_size": 0,
                                                    "logging": {"log_payloads": True}}})
    assert route(doc) == {"service": "mcp", "paths": ["/mcp"], "audit": {"log_payloads": True}}


def test_ai_mcp_oauth2():
    config = {**OAUTH["config"], "metadata_endpoint": "/.well-known/oauth-protected-resource/mcp", "timeout": 2500,
              "keepalive": True, "http_version": 1.1, "token_exchange": {"enabled": False}, "cache_introspection": False,
              "consumer_claim": ["sub"], "consumer_by": ["custom_id"], "scopes_supported": ["openid"]}
    doc = deck({"name": "ai-mcp-oauth2", "config": config})
    doc["services"][0]["routes"][0]["paths"].append("/.well-known/oauth-protected-resource/mcp")
    native = route(doc)
    assert native["paths"] == ["/mcp"]  # the metadata path is served by the gateway itself
    assert native["oauth"]["timeout"] == 2.5  # Kong counts milliseconds
    assert "metadata_endpoint" not in native["oauth"] and "keepalive" not in native["oauth"]
    assert translate(doc)["gateway"]["urls"] == ["https://gw.example.com"]

    jwks = {k: v for k, v in OAUTH["config"].items() if k not in ("introspection_endpoint", "client_id", "client_secret")}
    assert route(deck({"name": "ai-mcp-oauth2", "config": {**jwks, "jwks_endpoint": "https://idp.example.com/jwks"}}))[
        "oauth"]["jwks_endpoint"] == "https://idp.example.com/jwks"


def test_token_swap_becomes_credential_injection():
    native = route(deck(OAUTH, SWAP))
    assert native["credentials"] == {"mode": "inject", "add": {"headers": ["Authorization:Bearer stored"]}}


def test_swap_on_key_auth_route_that_removes_the_client_token():
    swap = {"name": "request-transformer-advanced", "config": {
        "remove": {"headers": ["authorization"], "querystring": [], "body": []},
        "replace": {"headers": [], "querystring": [], "body": [], "uri": None},
        "add": {"headers": ["Authorization:Bearer stored"], "querystring": ["v:1"], "body": []},
        "append": {"headers": []}, "rename": {"headers": []}, "allow": {"body": None}, "http_method": None,
        "dots_in_keys": True}}
    native = route(deck({"name": "key-auth", "config": {"anonymous": "dev-user"}}, swap))
    assert native["credentials"] == {"mode": "inject", "remove": {"headers": ["authorization"]},
                                     "add": {"headers": ["Authorization:Bearer stored"], "querystring": ["v:1"]},
                                     "allow_anonymous": True}  # Kong transforms for the anonymous consumer too


def test_consumer_and_group_scoped_transformers_become_overrides():
    doc = deck(OAUTH, SWAP)
    doc["consumers"][0]["plugins"] = [{"name": "request-transformer-advanced",
                                       "config": {"add": {"headers": ["Authorization:Bearer admin-token"]}}}]
    doc["consumer_groups"][1]["plugins"] = [{"name": "request-transformer-advanced",
                                             "config": {"add": {"headers": ["Authorization:Bearer dev-token"]}}}]
    doc["plugins"] = [{"name": "request-transformer-advanced", "consumer": "okta|dev", "route": "r",
                       "config": {"add": {"headers": ["Authorization:Bearer alice-token"]}}}]
    native = route(doc)["credentials"]
    assert native["overrides"] == [
        {"consumers": ["admin-user"], "add": {"headers": ["Authorization:Bearer admin-token"]}},
        {"consumers": ["dev-user"], "add": {"headers": ["Authorization:Bearer alice-token"]}},
        {"groups": ["developer"], "add": {"headers": ["Authorization:Bearer dev-token"]}},
    ]
    Policy.model_validate(translate(doc))


def test_prm_route_is_folded_into_the_rewrite():
    doc = deck(DATAKIT, KEY_AUTH)
    doc["services"].append({"name": "prm", "url": "http://127.0.0.1:8931/.well-known/oauth-protected-resource/mcp",
                            "routes": [{"name": "prm", "paths": ["/.well-known/oauth-protected-resource/mcp"],
                                        "methods": ["GET", "POST"], "plugins": [{
                                            "name": "response-transformer-advanced",
                                            "config": {"replace": {"json": ["resource:https://gw.example.com/mcp"],
                                                                   "json_types": ["string"]},
                                                       "remove": {"json": []}}}]}]})
    native = translate(doc)
    assert list(native["routes"]) == ["r"] and list(native["services"]) == ["mcp"]
    assert native["routes"]["r"]["prm"] == {
        "challenge": True, "mode": "rewrite", "resource": "https://gw.example.com/mcp",
        "upstream_url": "http://127.0.0.1:8931/.well-known/oauth-protected-resource/mcp"}
    doc["services"][1]["routes"][0]["strip_path"] = False
    doc["services"][1]["url"] = "http://127.0.0.1:8931"
    assert route(doc)["prm"]["upstream_url"] == "http://127.0.0.1:8931/.well-known/oauth-protected-resource/mcp"


def test_datakit_is_recognised_by_structure_not_names():
    nodes = copy.deepcopy(DATAKIT["config"]["nodes"])
    renames = {"CHECK_AUTH": "has_token", "AUTH_BRANCH": "gate", "UNAUTH_RESPONSE": "answer", "UNAUTH_EXIT": "stop"}
    text = json.dumps(nodes)
    for old, new in renames.items():
        text = text.replace(old, new)
    nodes = json.loads(text)
    nodes[0]["inputs"] = {"h": "request.headers"}
    nodes[0]["jq"] = '.h["Authorization"] != null'
    nodes[2]["values"] = {"WWW-Authenticate": nodes[2]["values"]["www-authenticate"].replace(', error="invalid_token"', ""),
                          "payload": '{"message":"Unauthorized"}'}
    nodes[3]["inputs"] = {"body": "answer.payload", "headers": "answer"}
    nodes[3]["status"] = "401"
    nodes.reverse()
    doc = deck({"name": "datakit", "ordering": {"before": {"access": ["key-auth", "ai-mcp-proxy"]}},
                "config": {"nodes": nodes, "debug": False}}, KEY_AUTH)
    assert route(doc)["prm"] == {"challenge": True}


def test_datakit_with_oauth_serves_the_prm():
    datakit = copy.deepcopy(DATAKIT)
    assert route(deck(datakit, OAUTH))["prm"] == {"challenge": True, "mode": "serve"}


def test_env_substitution_and_types():
    doc = deck()
    doc["services"][0] = {"name": "mcp", "host": '${{ env "DECK_HOST" }}', "port": '${{env "DECK_PORT"}}',
                          "protocol": "https", "routes": [{"name": "r", "paths": ['/${{ env "DECK_PREFIX" }}'],
                                                           "strip_path": '${{ env "DECK_STRIP" }}'}]}
    env = {"DECK_HOST": "mcp.example.com", "DECK_PORT": "8443", "DECK_PREFIX": "team-a", "DECK_STRIP": "false"}
    native = translate(doc, env)
    assert native["services"]["mcp"]["url"] == "https://mcp.example.com:8443"
    assert native["routes"]["r"] == {"service": "mcp", "paths": ["/team-a"], "strip_path": False}


def test_env_secrets_become_references_in_the_converter():
    doc = deck(OAUTH, {"name": "request-transformer-advanced",
                       "config": {"add": {"headers": ['Authorization:Bearer ${{ env "DECK_TOKEN" }}']}}},
               consumers=[{"username": "u", "keyauth_credentials": [{"key": '${{ env "DECK_KEY" }}'}]}])
    doc["services"][0]["routes"][0]["plugins"][0]["config"]["client_secret"] = '${{ env "DECK_SECRET" }}'
    env = {"DECK_TOKEN": "t0k3n", "DECK_KEY": "k3y", "DECK_SECRET": "s3cr3t"}
    loaded = translate(doc, env)
    assert [k["key"] for k in loaded["consumers"]["u"]["keys"]] == ["k3y"]
    assert loaded["routes"]["r"]["oauth"]["client_secret"] == "s3cr3t"
    converted = translate(doc, env, secret_references=True)
    assert [k["key"] for k in converted["consumers"]["u"]["keys"]] == ["{env://DECK_KEY}"]
    assert converted["routes"]["r"]["oauth"]["client_secret"] == "{env://DECK_SECRET}"
    assert converted["routes"]["r"]["credentials"]["add"]["headers"] == ["Authorization:Bearer {env://DECK_TOKEN}"]


def test_vault_references_pass_through(monkeypatch):
    monkeypatch.setenv("DEV_KEY", "from-the-vault")
    doc = deck(KEY_AUTH, consumers=[{"username": "u", "keyauth_credentials": [{"key": "{vault://env/dev-key}"}]}])
    assert [k["key"] for k in translate(doc)["consumers"]["u"]["keys"]] == ["{vault://env/dev-key}"]
    policy = Policy.model_validate(translate(doc))
    assert policy.consumers["u"].keys[0].source == "{vault://env/dev-key}"


def test_load_errors_name_the_line(tmp_path):
    (tmp_path / "kong.yaml").write_text(yaml.safe_dump(deck(KEY_AUTH, {"name": "proxy-cache"}), sort_keys=False))
    with pytest.raises(PolicyError) as refused:
        load_policy_file(tmp_path / "kong.yaml")
    [message] = refused.value.problems
    assert message.startswith("services[0].routes[0].plugins[1] (name: proxy-cache) (line ")


# --- refusals: one clear message per unsupported item -----------------------------------------------


def with_route_field(**fields) -> dict:
    doc = deck()
    doc["services"][0]["routes"][0].update(fields)
    return doc


def with_service_field(**fields) -> dict:
    doc = deck()
    doc["services"][0].update(fields)
    return doc


PRM_ROUTE = {"name": "prm", "paths": ["/.well-known/oauth-protected-resource/elsewhere"], "plugins": [
    {"name": "response-transformer-advanced", "config": {"replace": {"json": ["resource:https://gw/mcp"]}}}]}


def prm_route_with(config: dict) -> dict:
    doc = deck(KEY_AUTH)
    doc["services"].append({"name": "prm", "url": "http://127.0.0.1:8931", "routes": [{
        "name": "prm", "paths": ["/.well-known/oauth-protected-resource/mcp"],
        "plugins": [{"name": "response-transformer-advanced", "config": config}]}]})
    return doc


def datakit_with(change) -> dict:
    plugin = copy.deepcopy(DATAKIT)
    change(plugin["config"]["nodes"])
    return deck(plugin, KEY_AUTH)


REFUSALS = {
    "format-1.1": ({**deck(), "_format_version": "1.1"},
                   "_format_version: decK format '1.1' is not supported: only '3.0'"),
    "upstreams": ({**deck(), "upstreams": [{"name": "u"}]}, "upstreams: not supported (no load balancing"),
    "vaults": ({**deck(), "vaults": []}, "vaults: not supported (the built-in env vault"),
    "info-defaults": ({**deck(), "_info": {"defaults": {}}}, "_info.defaults: not supported: _info takes select_tags only"),
    "basic-auth-credentials": (deck(consumers=[{"username": "u", "basicauth_credentials": [{}]}]),
                               "consumers[0].basicauth_credentials: consumer field 'basicauth_credentials' is not "
                               "supported (only keyauth_credentials (key-auth) are supported)"),
    "consumer-acls": (deck(consumers=[{"username": "u", "acls": [{"id": "x"}]}]),
                      "consumers[0].acls[0]: an acl credential needs a group"),
    "consumer-without-username": (deck(consumers=[{"custom_id": "x"}]), "consumers[0]: a consumer needs a username"),
    "key-ttl": (deck(consumers=[{"username": "u", "keyauth_credentials": [{"key": "k", "ttl": 60}]}]),
                "consumers[0].keyauth_credentials[0].ttl: key-auth credential field 'ttl' is not supported (expiring keys"),
    "undeclared-group": (deck(consumers=[{"username": "u", "groups": [{"name": "ops"}]}]),
                         "consumers[0].groups[0]: consumer group 'ops' is not declared under consumer_groups"),
    "tls-verify": (with_service_field(tls_verify=False), "services[0].tls_verify: service field 'tls_verify' is not supported"),
    "grpc-service": (with_service_field(url=None, host="h", protocol="grpc"),
                     "services[0].protocol: protocol 'grpc' is not supported"),
    "url-and-host": (with_service_field(host="h"), "services[0]: give either url or host/port/protocol/path, not both"),
    "regex-path": (with_route_field(paths=["~/mcp$"]), "services[0].routes[0].paths[0]: a path must be a plain prefix "
                   "starting with '/' (regex paths, starting with '~', are not supported)"),
    "preserve-host": (with_route_field(preserve_host=True), "services[0].routes[0].preserve_host: not supported"),
    "route-headers": (with_route_field(headers={"x": ["y"]}), "services[0].routes[0].headers: route field 'headers' is "
                      "not supported (native routes match on path and method only)"),
    "grpc-route": (with_route_field(protocols=["grpc"]), "services[0].routes[0].protocols: only http and https routes"),
    "path-handling-v1": (with_route_field(path_handling="v1"), "services[0].routes[0].path_handling: only path_handling v0"),
    "wildcard-host": (with_route_field(hosts=["*.example.com"]), "services[0].routes[0].hosts: expected a list of host "
                      "names (wildcards are not supported)"),
    "unknown-plugin": (deck({"name": "proxy-cache", "config": {"strategy": "memory"}}),
                       "services[0].routes[0].plugins[0] (name: proxy-cache): plugin 'proxy-cache' is not supported; "
                       "supported plugins: key-auth, acl (with include_consumer_groups), ai-mcp-proxy, ai-mcp-oauth2, "
                       "openid-connect (bearer or introspection), cors"),
    "acl-without-consumer-groups": (deck({"name": "acl", "config": {"allow": ["admin"]}}),
                                    "route 'r': access names group 'admin', which is not declared in any consumer's acls"),
    "plugin-protocols": (deck({**KEY_AUTH, "protocols": ["grpc"]}), "services[0].routes[0].plugins[0] (name: key-auth)"
                         ".protocols: a plugin limited to some protocols is not supported"),
    "plugin-condition": (deck({**KEY_AUTH, "condition": "x"}), "services[0].routes[0].plugins[0].condition: plugin "
                         "field 'condition' is not supported"),
    "key-auth-option": (deck({"name": "key-auth", "config": {"key_names": ["apikey"], "identity_realms": [{"scope": "realm"}]}}),
                        "services[0].routes[0].plugins[0] (name: key-auth).config.identity_realms: option not supported"),
    "key-in-body": (deck({"name": "key-auth", "config": {"key_in_body": True}}),
                    "services[0].routes[0].plugins[0] (name: key-auth).config.key_in_body: key_in_body is not supported"),
    "unknown-mode": (deck({"name": "ai-mcp-proxy", "config": {"mode": "upstream-server"}}),
                     "(name: ai-mcp-proxy).config.mode: mode 'upstream-server' is not supported; "
                     "supported: passthrough-listener"),
    "conversion-tool": (deck({"name": "ai-mcp-proxy", "config": {"mode": "passthrough-listener",
                                                                 "tools": [{"name": "t", "path": "/x"}]}}),
                        "(name: ai-mcp-proxy).config.tools[0].path: only used by the conversion modes"),
    "oauth-acl-attribute": (deck({"name": "ai-mcp-proxy", "config": {"mode": "passthrough-listener",
                                                                     "acl_attribute_type": "oauth_access_token"}}),
                            "acl_attribute_type: oauth_access_token goes with access_token_claim_field"),
    "token-exchange": (deck({"name": "ai-mcp-oauth2", "config": {**OAUTH["config"], "token_exchange": {
        "enabled": True, "token_endpoint": "https://idp/token"}}}),
        "(name: ai-mcp-oauth2).config.passthrough_credentials: passthrough_credentials must be true when "
        "token_exchange is enabled (as in Kong)"),
    "oidc-browser-flow": (deck({"name": "openid-connect", "config": {
        "issuer": "https://idp", "auth_methods": ["authorization_code", "bearer"]}}),
        "(name: openid-connect).config.auth_methods: authorization_code is not supported on an MCP route"),
    "oidc-default-methods": (deck({"name": "openid-connect", "config": {"issuer": "https://idp"}}),
                             "(name: openid-connect).config.auth_methods: set auth_methods to [bearer] or [introspection]"),
    "oidc-query-token": (deck({"name": "openid-connect", "config": {"issuer": "https://idp", "auth_methods": ["bearer"],
                                                                     "bearer_token_param_type": ["header", "query"]}}),
                         "(name: openid-connect).config.bearer_token_param_type: only header is supported"),
    "oidc-scopes-claim-type": (deck({"name": "openid-connect", "config": {"issuer": "https://idp", "auth_methods": ["bearer"],
                                                                           "scopes_required": ["mcp \"x"]}}),
                               "is not a space-separated list of scopes"),
    "metadata-endpoint": (deck({"name": "ai-mcp-oauth2", "config": {**OAUTH["config"], "metadata_endpoint": "/prm"}}),
                          "(name: ai-mcp-oauth2).config.metadata_endpoint: the gateway serves this route's PRM at "
                          "/.well-known/oauth-protected-resource/mcp"),
    "transformer-body": (deck(OAUTH, {"name": "request-transformer-advanced", "config": {"add": {"body": ["a:b"]}}}),
                         "(name: request-transformer-advanced).config.add.body: body operations are not supported: on "
                         "an MCP route the body is the JSON-RPC message the gateway decides on"),
    "transformer-uri": (deck(OAUTH, {"name": "request-transformer-advanced", "config": {"replace": {"uri": "/x"}}}),
                        "(name: request-transformer-advanced).config.replace.uri: uri is not supported: the upstream "
                        "path is the route's"),
    "transformer-method": (deck(OAUTH, {"name": "request-transformer-advanced", "config": {"http_method": "GET"}}),
                           "(name: request-transformer-advanced).config.http_method: option not supported"),
    "transformer-without-auth": (deck(SWAP), "(name: request-transformer-advanced): becomes credential injection "
                                 "(credentials: mode inject), which the gateway does only for authenticated callers"),
    "transformer-on-passthrough": (deck(KEY_AUTH, SWAP), "(name: request-transformer-advanced): becomes credential "
                                   "injection, which replaces the client's credentials, but on this route the client's "
                                   "Authorization header reaches the upstream in Kong"),
    "consumer-scoped-key-auth": (deck(consumers=[{"username": "u", "plugins": [KEY_AUTH]}]),
                                 "consumers[0].plugins[0] (name: key-auth): plugins scoped to a consumer or consumer "
                                 "group are supported for request-transformer-advanced only"),
    "response-transformer-elsewhere": (deck({"name": "response-transformer-advanced",
                                             "config": {"replace": {"json": ["resource:https://gw/mcp"]}}}),
                                       "(name: response-transformer-advanced): response-transformer-advanced is "
                                       "supported only as the PRM rewrite"),
    "response-transformer-other-field": (prm_route_with({"replace": {"json": ["resource:https://gw/mcp"]},
                                                         "add": {"headers": ["x:y"]}}),
                                         "(name: response-transformer-advanced).config.add: only replace.json: "
                                         "['resource:<absolute URL>'] (the PRM rewrite) is supported"),
    "datakit-other-graph": (datakit_with(lambda n: n.pop()), "(name: datakit).config.nodes: node types ['branch', "
                            "'jq', 'static']; the only datakit graph supported is the PRM challenge"),
    "datakit-other-test": (datakit_with(lambda n: n[0].update(jq=".headers.cookie != null")),
                           "(name: datakit).config.nodes: the jq node must read request.headers and test only that "
                           "an Authorization header is present"),
    "datakit-other-status": (datakit_with(lambda n: n[3].update(status=403)),
                             "(name: datakit).config.nodes: the exit status is 403, not 401"),
    "datakit-other-body": (datakit_with(lambda n: n[2]["values"].update(BODY='{"error": "login"}')),
                           "(name: datakit).config.nodes: the body must be {\"message\": \"Unauthorized\"}"),
    "datakit-extra-header": (datakit_with(lambda n: n[2]["values"].update({"x-trace": "1"})),
                             "(name: datakit).config.nodes: static headers ['content-type', 'www-authenticate', "
                             "'x-trace']"),
    "datakit-elsewhere": (datakit_with(lambda n: n[2]["values"].update({"www-authenticate": 'Bearer resource_metadata='
                                                                        '"https://gw/.well-known/oauth-protected-resource/x"'})),
                          "(name: datakit).config.nodes: the challenge points at https://gw/.well-known/oauth-protected-"
                          "resource/x, but the gateway serves this route's PRM at /.well-known/oauth-protected-resource/mcp"),
    "ordering-against-native": (deck({**KEY_AUTH, "ordering": {"before": {"access": ["datakit"]}}}),
                                "(name: key-auth).ordering.before.access: key-auth cannot run before datakit"),
    "ordering-other-phase": (deck({**KEY_AUTH, "ordering": {"after": {"header_filter": ["cors"]}}}),
                             "(name: key-auth).ordering.after: only the access phase can be ordered"),
    "vault-elsewhere": (deck({"name": "cors", "config": {"origins": ["{vault://env/origin}"]}}),
                        "services[0].routes[0].plugins[0].config.origins[0]: a Kong vault reference is resolved only in "
                        "consumer keys, ai-mcp-oauth2 client_secret and request-transformer(-advanced) values"),
    "other-vault": (deck(consumers=[{"username": "u", "keyauth_credentials": [{"key": "{vault://hcv/k}"}]}]),
                    "consumers[0].keyauth_credentials[0].key: cannot resolve {vault://hcv/k}: only Kong's env vault"),
    "env-template-function": (deck(consumers=[{"username": '${{ env "DECK_U" | lower }}'}]),
                              "consumers[0].username: unsupported decK template"),
    "env-without-prefix": (deck(consumers=[{"username": '${{ env "HOME" }}'}]),
                           "consumers[0].username: environment variable 'HOME': decK only reads variables whose names "
                           "start with DECK_"),
    "env-missing": (deck(consumers=[{"username": '${{ env "DECK_USER" }}'}]),
                    'consumers[0].username: environment variable DECK_USER is not set (${{ env "DECK_USER" }})'),
    "service-less-route": ({**deck(), "routes": [{"name": "x", "paths": ["/x"]}]},
                           "routes[0]: a route needs a service (service: NAME)"),
    "unknown-scope": ({**deck(), "plugins": [{"name": "cors", "route": "nope"}]},
                      "plugins[0] (name: cors): route 'nope' is not defined"),
    "duplicate-plugin": (deck(KEY_AUTH, KEY_AUTH), "services[0].routes[0].plugins[1] (name: key-auth): a second key-auth "
                         "plugin at the same level as services[0].routes[0].plugins[0]"),
    "no-route": ({"_format_version": "3.0", "services": [{"name": "s", "url": UPSTREAM}]},
                 "(top level): the file defines no route"),
}


@pytest.mark.parametrize("doc, message", list(REFUSALS.values()), ids=list(REFUSALS))
def test_refusal(doc, message):
    assert message in only_problem(doc)


def test_prm_route_refusals():
    doc = deck(KEY_AUTH)
    doc["services"].append({"name": "prm", "url": "http://127.0.0.1:8931", "routes": [
        {**PRM_ROUTE, "methods": ["POST"], "plugins": [*PRM_ROUTE["plugins"], KEY_AUTH]}]})
    assert problems(doc) == [
        "services[1].routes[0].plugins[0] (name: response-transformer-advanced): response-transformer-advanced is "
        "supported only as the PRM rewrite, on a route whose paths are /.well-known/oauth-protected-resource<path of "
        "another route>; path '/.well-known/oauth-protected-resource/elsewhere' is not (an MCP route's answers are the "
        "JSON-RPC results the gateway filters and streams as they come)",
    ]
    doc["services"][1]["routes"][0]["paths"] = ["/.well-known/oauth-protected-resource/mcp"]
    assert problems(doc) == [
        "services[1].routes[0].plugins[1] (name: key-auth): not supported on a PRM route: the gateway serves protected "
        "resource metadata to everyone, without running plugins (discovery precedes authentication)",
        "services[1].routes[0].methods: a PRM route must accept GET",
    ]


def test_hosts_must_agree():
    doc = with_route_field(hosts=["a.example.com"])
    doc["services"][0]["routes"].append({"name": "b", "paths": ["/b"], "hosts": ["b.example.com"]})
    assert [p.split(":")[0] for p in problems(doc)] == ["services[0].routes[0].hosts", "services[0].routes[1].hosts"]


def test_acl_plugin_becomes_route_access():
    native = translate(deck(KEY_AUTH, {"name": "acl", "config": {"allow": ["admin"], "include_consumer_groups": True,
                                                                 "hide_groups_header": True}}))
    assert native["routes"]["r"]["access"] == {"allow": ["admin"], "hide_groups_header": True,
                                               "include_consumer_groups": True}
    native = translate(deck(KEY_AUTH, {"name": "acl", "config": {"deny": ["developer"], "include_consumer_groups": True}}))
    assert native["routes"]["r"]["access"] == {"deny": ["developer"], "include_consumer_groups": True}


def test_consumers_acls_credentials_are_the_acl_plugins_groups():
    consumers = [{"username": "dev", "groups": [{"name": "developer"}], "keyauth_credentials": [{"key": "dev-key"}],
                  "acls": [{"group": "github-readers"}, {"group": "github-readers", "tags": ["t"]}]},
                 {"username": "ops", "keyauth_credentials": [{"key": "ops-key"}], "acls": [{"group": "ops"}]}]
    native = translate(deck(KEY_AUTH, {"name": "acl", "config": {"allow": ["github-readers"]}}, consumers=consumers))
    assert native["consumers"]["dev"]["acls"] == ["github-readers"] and native["consumers"]["ops"]["acls"] == ["ops"]
    assert native["routes"]["r"]["access"] == {"allow": ["github-readers"], "include_consumer_groups": False}
    # a consumer group name matches only with include_consumer_groups, as in Kong
    assert "not declared in any consumer's acls" in only_problem(
        deck(KEY_AUTH, {"name": "acl", "config": {"deny": ["developer"]}}, consumers=consumers))


# --- what a translated route does, as Kong does it (issue 12, items 10-13) ------------------------------

IDENTITY_PREFIXES = ("x-consumer-", "x-credential-", "x-anonymous-")
FORGED = {"X-Consumer-Username": "admin-user", "X-Consumer-ID": "forged-id", "X-Consumer-Groups": "admin",
          "X-Credential-Identifier": "forged-key-id", "X-Anonymous-Consumer": "false"}


def sent_identity(flow: http.HTTPFlow) -> dict[str, list[str]]:
    """The identity headers of the request as it leaves for the upstream, every value of each."""
    names = {k.lower() for k in flow.request.headers if k.lower().startswith(IDENTITY_PREFIXES)}
    return {name: flow.request.headers.get_all(name) for name in sorted(names)}


async def deck_request(doc: dict, headers: dict[str, str], message: dict | None = None, method: str = "POST",
                       settings: DeckSettings | None = None):
    policy = Policy.model_validate(translate(doc, settings=settings))
    return await run_request(policy, "/mcp", headers, message, method)


async def test_key_auth_route_sends_kongs_identity_headers_not_the_clients():
    """A developer with a valid key forges an admin identity: the upstream sees Kong's headers for
    the developer only (key-auth's set_consumer: consumer id, custom_id, username, credential id)."""
    ctx, flow, answer = await deck_request(deck(KEY_AUTH), {"apikey": "dev-api-key", **FORGED})
    assert answer is None and ctx.upstream_set
    assert sent_identity(flow) == {
        "x-consumer-custom-id": ["okta|dev"],
        "x-consumer-id": [kong_id("consumers", "dev-user")],
        "x-consumer-username": ["dev-user"],
        "x-credential-identifier": [kong_id("keyauth_credentials", kong_id("consumers", "dev-user") + ":0")],
    }  # no X-Consumer-Groups without the acl plugin, no X-Anonymous-Consumer for a real key, as in Kong


async def test_kong_identity_headers_with_given_ids_anonymous_and_acl():
    consumers = [{"username": "dev-user", "id": "c-dev", "keyauth_credentials": [{"key": "dev-api-key", "id": "k-dev"}],
                  "groups": [{"name": "developer"}]},
                 {"username": "guest", "id": "c-guest"}]
    acl = {"name": "acl", "config": {"deny": ["admin"], "include_consumer_groups": True}}
    doc = deck({**KEY_AUTH, "config": {**KEY_AUTH["config"], "anonymous": "guest"}}, acl, consumers=consumers)
    _, flow, answer = await deck_request(doc, {"apikey": "dev-api-key", **FORGED})
    assert answer is None and sent_identity(flow) == {
        "x-consumer-groups": ["developer"], "x-consumer-id": ["c-dev"], "x-consumer-username": ["dev-user"],
        "x-credential-identifier": ["k-dev"]}  # the acl plugin adds the groups
    _, flow, answer = await deck_request(doc, {"apikey": "wrong", **FORGED})  # Kong: anonymous, no credential
    assert answer is None and sent_identity(flow) == {
        "x-anonymous-consumer": ["true"], "x-consumer-id": ["c-guest"], "x-consumer-username": ["guest"]}
    hidden = deck(KEY_AUTH, {"name": "acl", "config": {**acl["config"], "hide_groups_header": True}},
                  consumers=consumers)
    _, flow, answer = await deck_request(hidden, {"apikey": "dev-api-key"})
    assert answer is None and "x-consumer-groups" not in sent_identity(flow)


def test_ai_mcp_oauth2_without_endpoints_discovers_the_jwks():
    native = route(deck({"name": "ai-mcp-oauth2", "config": {"authorization_servers": ["https://idp"],
                                                             "metadata_cache_ttl": 60}}))
    assert native["oauth"] == {"authorization_servers": ["https://idp"], "metadata_cache_ttl": 60}


def test_openid_connect_becomes_the_native_resource_server():
    introspection = route(deck({"name": "openid-connect", "config": {
        "issuer": "https://idp/realms/r", "auth_methods": ["introspection"], "client_id": ["kong"],
        "client_secret": ["s"], "client_auth": ["client_secret_post"], "bearer_token_param_type": ["header"],
        "consumer_claim": ["sub"], "hide_credentials": True, "timeout": 5000}}))
    assert introspection["oauth"] == {
        "authorization_servers": ["https://idp/realms/r"], "issuer": "https://idp/realms/r", "client_id": "kong",
        "client_secret": "s", "client_auth": "client_secret_post", "discover_introspection": True,
        "insecure_relaxed_audience_validation": True, "consumer_claim": ["sub"], "timeout": 5.0,
        "passthrough_credentials": False}
    bearer = route(deck({"name": "openid-connect", "config": {
        "issuer": "https://idp", "auth_methods": ["bearer"], "audience_required": ["https://gw.example.com/mcp"]}}))
    assert bearer["oauth"] == {"authorization_servers": ["https://idp"], "issuer": "https://idp",
                               "audience_required": ["https://gw.example.com/mcp"],
                               "resource": "https://gw.example.com/mcp", "passthrough_credentials": True}
    scoped = route(deck({"name": "openid-connect", "config": {
        "issuer": "https://idp", "auth_methods": ["bearer"], "scopes_required": ["mcp:read mcp:write", "admin"],
        "scopes_claim": ["scp"]}}))
    assert (scoped["oauth"]["scopes_required"], scoped["oauth"]["scopes_claim"]) == (["mcp:read mcp:write", "admin"], ["scp"])
    assert "both" in only_problem(deck({"name": "openid-connect", "config": {"issuer": "https://idp",
                                                                             "auth_methods": ["bearer"]}}, OAUTH))


def test_identity_headers_are_turned_on_for_key_auth_routes_only():
    assert route(deck(KEY_AUTH))["upstream_identity_headers"] == [
        "X-Consumer-ID", "X-Consumer-Custom-ID", "X-Consumer-Username", "X-Credential-Identifier", "X-Anonymous-Consumer"]
    assert "upstream_identity_headers" not in route(deck(OAUTH))  # ai-mcp-oauth2's own headers are not Kong's key-auth's


TOOL_ACLS = ROOT.parent / "shared" / "kong-docs" / "cases" / "01-mcp-tool-acls-howto.yaml"
HOWTO = ROOT / "tests" / "data" / "kong-mcp-tool-acls.yaml"  # Kong's how-to "use access controls for MCP tools"
CALL_SEARCH_ORDERS = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "search_orders", "arguments": {}}}


def howto() -> dict:
    return yaml.safe_load(HOWTO.read_text())


async def test_denied_call_is_minus_32602_by_default_and_403_with_the_newer_docs():
    """Kong before 3.14 (and the recipe) answer -32602; 3.14+ answers HTTP 403 (mcp_deck_deny=http403)."""
    _, _, answer = await deck_request(howto(), {"apikey": "bob-key"}, CALL_SEARCH_ORDERS)
    assert answer.status_code == 200 and json.loads(answer.content)["error"] == {
        "code": -32602, "message": "Tool 'search_orders' is not available for consumer group 'developer'"}
    _, _, answer = await deck_request(howto(), {"apikey": "bob-key"}, CALL_SEARCH_ORDERS,
                                      settings=DeckSettings(deny_response="http403"))
    denial = "Tool 'search_orders' is not available for consumer group 'developer'"
    assert answer.status_code == 403 and answer.headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", error_description="{denial}"')
    assert json.loads(answer.content)["error"]["message"] == denial
    _, _, answer = await deck_request(howto(), {"apikey": "alice-key"}, CALL_SEARCH_ORDERS,
                                      settings=DeckSettings(deny_response="http403"))
    assert answer is None  # the admin's call goes through


def test_deny_option_is_checked_and_part_of_the_digest(tmp_path):
    with pytest.raises(ValueError, match="mcp_deck_deny must be one of jsonrpc, http403"):
        DeckSettings(deny_response="403")
    (tmp_path / "kong.yaml").write_text(HOWTO.read_text())
    old, old_digest, _ = load_policy_file(tmp_path / "kong.yaml")
    new, new_digest, _ = load_policy_file(tmp_path / "kong.yaml", deck=DeckSettings(deny_response="http403"))
    assert (old.routes["mcp-acl-route"].acl.deny_response, new.routes["mcp-acl-route"].acl.deny_response) == (
        "jsonrpc", "http403")
    assert old_digest != new_digest  # the same file under another setting is another policy version
    assert load_policy_file(tmp_path / "kong.yaml", deck=DeckSettings())[1] == old_digest


@pytest.mark.parametrize("settings, status", [(None, 200), (DeckSettings(deny_response="http403"), 403)],
                         ids=["jsonrpc", "http403"])
async def test_consumer_no_tool_is_allowed_to_cannot_connect(settings, status):
    """The how-to's carol (group suspended): every tool's ACL and the default deny her, so her
    connection fails (Kong: -32602 before 3.14, 403 after), initialize included, and nothing of
    hers reaches the upstream; a GET stream or a notification is refused too."""
    ctx, _, answer = await deck_request(howto(), {"apikey": "carol-key"}, settings=settings)
    text = "No tool is available for consumer group 'suspended'"
    reason = {"error": "insufficient_scope", "error_description": text} if status == 403 else {}
    assert answer is not None and answer.status_code == status and not ctx.upstream_set
    assert json.loads(answer.content) == {"jsonrpc": "2.0", "id": 1, "error": {
        "code": -32602, "message": text, **({"data": reason} if reason else {})}}
    for method, message in (("GET", None), ("POST", {"jsonrpc": "2.0", "method": "notifications/initialized"})):
        ctx, _, answer = await deck_request(howto(), {"apikey": "carol-key"}, message, method, settings)
        assert answer.status_code == 403 and not ctx.upstream_set
        assert json.loads(answer.content) == {"message": text, **reason}
        assert answer.headers.get("www-authenticate") == (
            f'Bearer error="insufficient_scope", error_description="{text}"' if reason else None)


@pytest.mark.parametrize("key", ["alice-key", "bob-key", "eason-key"])
async def test_consumers_with_some_tool_connect(key):
    """eason has no group and the default denies him, but list_users is his: he connects."""
    _, _, answer = await deck_request(howto(), {"apikey": key})
    assert answer is None


def test_howto_copy_is_kongs_file():
    if not TOOL_ACLS.exists():
        pytest.skip("the Kong docs corpus is not beside this checkout")
    assert yaml.safe_load(TOOL_ACLS.read_text()) == howto()


def test_refused_route_is_said_to_be_refused_once():
    """Kong's aggregation how-to: a route without a service is refused; the plugins naming it do
    not each claim it is undefined."""
    doc = {**deck(), "routes": [{"name": "agg", "paths": ["/agg"]}], "plugins": [
        {"name": "key-auth", "route": "agg"}, {"name": "cors", "route": "agg"}, {"name": "cors", "route": "nope"}]}
    assert problems(doc) == [
        "routes[0]: a route needs a service (service: NAME): a route without one forwards nowhere",
        "plugins[0] (name: key-auth): route 'agg' was refused at routes[0]: the plugins naming it are checked once it "
        "loads",
        "plugins[2] (name: cors): route 'nope' is not defined",
    ]
    doc["routes"] = [{"name": "agg", "paths": ["/agg"], "service": "missing"}]
    assert problems(doc)[:2] == ["routes[0].service: service 'missing' is not defined",
                                 "plugins[0] (name: key-auth): route 'agg' was refused at routes[0]: the plugins "
                                 "naming it are checked once it loads"]


def test_acl_dump_with_always_use_authenticated_groups():
    """decK's dump of an acl plugin (case 35): always_use_authenticated_groups: true falls back to the
    consumer's groups, no plugin here authenticating others; its deny list names a group no consumer has."""
    doc = deck({"name": "acl", "config": {"allow": None, "deny": ["developer"], "hide_groups_header": False,
                                          "include_consumer_groups": False, "always_use_authenticated_groups": True}})
    assert problems(doc) == ["(top level): route 'r': access names group 'developer', which is not declared in any consumer's acls"]


def test_acl_groups_of_a_policy_without_any_group_load_with_a_warning(caplog):
    """Case 35 as decK dumps it: no consumer, no consumer group, an acl deny list. No caller of
    such a policy is in any group, so no name can be a typo for a real one: it loads, with a
    warning. One declared group anywhere and the same name is refused again (above)."""
    doc = deck({"name": "acl", "config": {"deny": ["example"], "include_consumer_groups": False,
                                          "always_use_authenticated_groups": True}}, consumers=[], groups=[])
    with caplog.at_level("WARNING", logger="mcpgw.policy"):
        assert translate(doc)["routes"]["r"]["access"]["deny"] == ["example"]
    assert "access names group 'example', which is not declared" in caplog.text
    doc = deck({"name": "acl", "config": {"deny": ["example"]}}, consumers=[], groups=[{"name": "admin"}])
    assert problems(doc) == ["(top level): route 'r': access names group 'example', which is not declared in any "
                             "consumer's acls"]


def test_deny_option_reloads_the_decK_policy(tmp_path):
    """`--set mcp_deck_deny=http403` at start or at runtime (mitmweb's options, `:set`): the decK
    file is translated again; a value that is no setting is refused and never half-applied."""
    from mitmproxy import exceptions
    from mitmproxy.addons.proxyserver import Proxyserver
    from mitmproxy.test import taddons

    from mcpgw.addon import MCPGateway

    path = tmp_path / "kong.yaml"
    path.write_text(HOWTO.read_text())
    addon = MCPGateway()
    with taddons.context(Proxyserver(), addon) as tctx:
        tctx.configure(addon, mcp_policy=str(path), mcp_deck_deny="http403")
        first = addon.store.current
        assert first.policy.routes["mcp-acl-route"].acl.deny_response == "http403"
        addon._running = True
        tctx.configure(addon, mcp_deck_deny="jsonrpc")
        second = addon.store.current
        assert second.version > first.version and second.digest != first.digest
        assert second.policy.routes["mcp-acl-route"].acl.deny_response == "jsonrpc"
        with pytest.raises(exceptions.OptionsError, match="mcp_deck_deny must be one of jsonrpc, http403"):
            tctx.configure(addon, mcp_deck_deny="403")
        assert addon.store.current is second and addon.store.deck == DeckSettings()


def test_deny_option_with_a_bad_value_stops_the_start(tmp_path):
    from mitmproxy.addons.proxyserver import Proxyserver
    from mitmproxy.test import taddons

    from mcpgw.addon import MCPGateway

    path = tmp_path / "kong.yaml"
    path.write_text(HOWTO.read_text())
    addon = MCPGateway()
    with taddons.context(Proxyserver(), addon) as tctx:
        tctx.configure(addon, mcp_policy=str(path), mcp_deck_deny="HTTP 403")
        assert "mcp_deck_deny must be one of" in addon._startup_error  # running() exits with it


def test_native_keys_with_ids_and_identity_header_lists():
    """What the translation relies on, natively: a key may carry its credential id, and a route may
    name the identity headers it sends."""
    base = {"services": {"s": {"url": UPSTREAM}}, "consumer_groups": ["g"],
            "routes": {"r": {"service": "s", "paths": ["/mcp"], "key_auth": {},
                             "upstream_identity_headers": ["x-consumer-username", "X-Credential-Identifier"]}}}
    policy = Policy.model_validate({**base, "consumers": {"u": {"keys": [{"key": "k1", "id": "key-1"}, "k2"]}}})
    assert [k.id for k in policy.consumers["u"].keys] == ["key-1", None]
    assert policy.routes["r"].upstream_identity_headers == ("X-Consumer-Username", "X-Credential-Identifier")
    for consumers, message in (
        ({"u": {"keys": [{"key": "k1", "id": "same"}]}, "v": {"keys": [{"key": "k2", "id": "same"}]}},
         "consumers 'u' and 'v' have keys with the same id 'same'"),
        ({"u": {"keys": [{"key": "k1", "secret": "x"}]}}, "a key entry is a key, or a mapping of key and id"),
        ({"u": {"keys": [{"key": "k1", "id": ""}]}}, "a key's id must be a non-empty string"),
    ):
        with pytest.raises(ValueError, match=message):
            Policy.model_validate({**base, "consumers": consumers})
    with pytest.raises(ValueError, match="unknown identity header 'X-Consumer-Token'"):
        Policy.model_validate({**base, "routes": {"r": {**base["routes"]["r"],
                                                        "upstream_identity_headers": ["X-Consumer-Token"]}}})


# --- request-transformer(-advanced) without a credential: request_transform (item 14) -----------------

RT_ADD = {"name": "request-transformer", "config": {"add": {"headers": ["New-Header:Header Value"]}}}  # Kong's example


async def test_transformer_removal_is_applied_to_what_the_client_sends():
    """A client sends the header and parameter the route's transformer removes: the upstream gets
    neither, and the route's own additions whatever the client sent first."""
    doc = deck(KEY_AUTH, {"name": "request-transformer", "config": {
        "remove": {"headers": ["X-Internal-Debug"], "querystring": ["debug"]},
        "add": {"headers": ["X-Team:platform"], "querystring": ["source:gateway"]},
        "replace": {"headers": ["X-Env:prod"]}}})
    ctx, flow, answer = await deck_request(doc, {"apikey": "dev-api-key", "X-Internal-Debug": "1", "X-Env": "dev",
                                                 "X-Team": "intruders"})
    assert answer is None and ctx.upstream_set
    headers = flow.request.headers
    assert "x-internal-debug" not in headers and headers.get_all("x-env") == ["prod"]
    assert headers.get_all("x-team") == ["intruders"]  # add: only when absent, as in Kong
    assert flow.request.query.get_all("source") == ["gateway"]


async def test_kongs_request_transformer_example_loads_and_adds_its_header():
    native = route(deck(KEY_AUTH, RT_ADD))
    assert native["request_transform"] == {"add": {"headers": ["New-Header:Header Value"]}}
    assert "credentials" not in native  # nothing of the client's is stripped: no credential is involved
    _, flow, answer = await deck_request(deck(KEY_AUTH, RT_ADD), {"apikey": "dev-api-key",
                                                                  "Authorization": "Bearer users-own"})
    assert answer is None and flow.request.headers["New-Header"] == "Header Value"
    assert flow.request.headers["Authorization"] == "Bearer users-own"
    advanced = {**RT_ADD, "name": "request-transformer-advanced"}
    assert route(deck(KEY_AUTH, advanced))["request_transform"] == native["request_transform"]


def test_transformers_never_touch_what_the_gateway_decided_on():
    for config, message in (
        ({"add": {"body": ["customer_id:1"]}}, "config.add.body: body operations are not supported: on an MCP route "
                                                "the body is the JSON-RPC message the gateway decides on"),
        ({"allow": {"body": ["customer_id"]}}, "config.allow.body: body operations are not supported"),
        ({"rename": {"headers": ["Mcp-Name:X-Tool"]}}, "config: rename.headers: Mcp-Name cannot be changed: the "
                                                       "upstream must get the request the gateway decided on"),
        ({"add": {"headers": ["Mcp-Session-Id:fixed"]}}, "config: add.headers: Mcp-Session-Id cannot be changed"),
    ):
        assert message in only_problem(deck(KEY_AUTH, {"name": "request-transformer", "config": config}))
    # request-validator is translated (tests/unit/test_request_validator.py)
    assert route(deck({"name": "request-validator", "config": {"body_schema": "[]"}}))["request_validator"] == {
        "body_schema": "[]"}


def test_a_transformer_setting_a_credential_is_the_token_swap_only():
    """A credential (by its name, or a decK variable or vault value) goes through credential
    injection and its rules: on a passthrough route it is refused, as before."""
    refused = only_problem(deck(KEY_AUTH, {"name": "request-transformer", "config": {
        "add": {"headers": ["X-Api-Key:stored"]}}}))
    assert "becomes credential injection, which replaces the client's credentials" in refused
    from_env = deck(OAUTH, {"name": "request-transformer", "config": {
        "add": {"headers": ['X-Upstream:${{ env "DECK_TOKEN" }}']}}})
    assert route_of(from_env, {"DECK_TOKEN": "t0k3n"})["credentials"]["mode"] == "inject"
    both = deck(OAUTH, SWAP, RT_ADD)
    native = route(both)
    assert native["credentials"]["mode"] == "inject" and native["request_transform"] == {
        "add": {"headers": ["New-Header:Header Value"]}}  # request-transformer runs after -advanced (801 < 802)


def route_of(doc: dict, env: dict) -> dict:
    return translate(doc, env)["routes"]["r"]


def test_native_request_transform_refuses_credentials_and_decided_headers():
    base = {"services": {"s": {"url": UPSTREAM}}, "routes": {"r": {"service": "s", "paths": ["/mcp"]}}}

    def with_transform(transform: dict) -> dict:
        return {**base, "routes": {"r": {**base["routes"]["r"], "request_transform": transform}}}

    policy = Policy.model_validate(with_transform({"add": {"headers": ["X-Team:platform"]}}))
    assert policy.routes["r"].request_transform.add.headers[0][0] == "X-Team"
    for transform, message in (({"add": {"headers": ["Authorization:Bearer stored"]}}, "looks like a credential"),
                               ({"append": {"querystring": ["api_key:x"]}}, "looks like a credential"),
                               ({"remove": {"headers": ["MCP-Protocol-Version"]}}, "cannot be changed")):
        with pytest.raises(ValueError, match=message):
            Policy.model_validate(with_transform(transform))
