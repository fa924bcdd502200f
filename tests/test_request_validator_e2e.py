"""Kong doc case 35 (a decK dump with acl + request-validator) through a real mitmdump, its service
pointed at a real MCP server (scripts/demo_upstream.py); then the same file with the validator's
schemas made to admit JSON-RPC and its acl removed, so that what passes reaches the server.

Case 35 as Kong runs it: request-validator (priority 999) before acl (950). Its body_schema '[]'
(Kong's field format, no field) admits only an empty body or {}: a JSON-RPC message gets Kong's 400
naming each unknown field. A request passing the validator meets the acl, which (no plugin
authenticating anyone) answers 401 Unauthorized. Nothing of either reaches the server."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from tests.support.gateway import MCP_HEADERS, DemoUpstream, Gateway, jsonrpc
from tests.unit.test_request_validator import case_35

pytestmark = pytest.mark.e2e

PATH = "/r1/api/v1"
INIT = jsonrpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                              "clientInfo": {"name": "e2e", "version": "1"}})
JSONRPC_SCHEMA = {"type": "object", "required": ["jsonrpc", "method"],
                  "properties": {"jsonrpc": {"enum": ["2.0"]}, "method": {"type": "string"}}}
CT_REFUSED = {"message": "specified Content-Type is not allowed"}
KEY, DENIED_KEY = "other-key", "example-key"


def pointed_at(doc: dict, upstream: DemoUpstream) -> dict:
    """Case 35's service host example.com -> the local MCP server (its port and /mcp path with it)."""
    service = doc["services"][0]
    service.update(host="127.0.0.1", port=upstream.port, path="/mcp")
    return doc


@pytest.fixture(scope="module")
def upstream(workdir):
    server = DemoUpstream(workdir, name="upstream")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def case35(workdir, upstream):
    gw = Gateway(workdir, yaml.safe_dump(pointed_at(case_35(), upstream)), intercept=False, name="case35")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def admitting(workdir, upstream):
    """Case 35 with body_schema a draft 4 schema of a JSON-RPC message and param-test a required
    integer; key-auth beside its acl, so that the acl's deny: [example] meets consumers."""
    doc = pointed_at(case_35(), upstream)
    service = doc["services"][0]
    validator = service["plugins"][1]
    validator["config"].update(version="draft4", body_schema=json.dumps(JSONRPC_SCHEMA))
    validator["config"]["parameter_schema"][0].update(schema='{"type":"integer"}', required=True)
    service["plugins"].append({"name": "key-auth", "config": {"key_names": ["apikey"]}})
    doc["consumers"] = [{"username": "in-example", "acls": [{"group": "example"}], "keyauth_credentials": [{"key": DENIED_KEY}]},
                        {"username": "other", "keyauth_credentials": [{"key": KEY}]}]
    gw = Gateway(workdir, yaml.safe_dump(doc), intercept=False, name="admitting")
    yield gw
    gw.stop()


async def post(url: str, *, content_type: str | None = "application/json", body: bytes | None = None,
               query: str = "", key: str | None = KEY) -> httpx.Response:
    headers = {**MCP_HEADERS, **({"apikey": key} if key else {})}
    headers.pop("Content-Type")
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with httpx.AsyncClient(timeout=20) as client:
        return await client.post(url + query, content=json.dumps(INIT).encode() if body is None else body,
                                 headers=headers)


# --- case 35 as it is -------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/json; charset=utf-8", "application/json, text/plain",
                                          None], ids=["other-type", "extra-parameter", "a-list", "none"])
async def test_case_35_refuses_a_content_type_it_does_not_allow(case35, upstream, content_type):
    upstream.reset()
    refused = await post(case35.url(PATH), content_type=content_type)
    assert (refused.status_code, refused.json()) == (400, CT_REFUSED)  # verbose_response: true
    assert refused.headers["content-type"].startswith("application/json")
    assert upstream.requests() == []


async def test_case_35_body_schema_admits_no_jsonrpc_field(case35, upstream):
    upstream.reset()
    refused = await post(case35.url(PATH), query="?param-test=a&param-test=b")
    assert (refused.status_code, refused.json()) == (400, {"message": {k: "unknown field" for k in INIT}})
    assert upstream.requests() == []


@pytest.mark.parametrize("body", [b"", b"{}"], ids=["empty", "empty-record"])
async def test_case_35_what_passes_the_validator_is_no_mcp_message(case35, upstream, body):
    """An empty body or {} passes the validator; the gateway's JSON-RPC parsing (before the acl
    here; in Kong ai-mcp-proxy parses after it, so Kong answers the acl's 401) refuses it."""
    upstream.reset()
    refused = await post(case35.url(PATH), body=body, query="?param-test=anything")
    assert refused.status_code == 400 and "jsonrpc" in refused.json() and "message" not in refused.json()
    assert upstream.requests() == []


# --- case 35 admitting JSON-RPC ----------------------------------------------------------------------------


async def test_a_conforming_request_reaches_the_server(admitting, upstream):
    upstream.reset()
    answer = await post(admitting.url(PATH), query="?param-test=7")
    assert answer.status_code == 200, answer.text
    assert [r.get("rpc_method") for r in upstream.requests()] == ["initialize"]


async def test_the_acl_still_denies_example_and_the_validator_judges_first(admitting, upstream):
    upstream.reset()
    refused = await post(admitting.url(PATH), query="?param-test=7", key=DENIED_KEY)
    assert (refused.status_code, refused.json()) == (403, {"message": "You cannot consume this service"})
    # Kong's priorities: request-validator (999) before acl (950): a malformed request gets the 400
    malformed = await post(admitting.url(PATH), query="?param-test=x", key=DENIED_KEY)
    assert malformed.status_code == 400 and malformed.json()["message"].startswith("query 'param-test'")
    # and key-auth (1250) before both: no key, no judgement of the request
    anonymous = await post(admitting.url(PATH), query="?param-test=x", key=None)
    assert anonymous.status_code == 401
    assert upstream.requests() == []


@pytest.mark.parametrize("query, error", [
    ("?param-test=abc", "wrong type: expected integer"),
    ("?param-test=7&param-test=abc", "wrong type: expected integer"),  # each occurrence is judged
    ("?param-test=abc&param-test=7", "wrong type: expected integer"),
    ("?Param-Test=7", "required parameter missing"),  # query names are case-sensitive, as in Kong
    ("", "required parameter missing"),
], ids=["not-an-integer", "duplicate-second", "duplicate-first", "other-case", "missing"])
async def test_a_bad_query_parameter_gets_kongs_400(admitting, upstream, query, error):
    upstream.reset()
    refused = await post(admitting.url(PATH), query=query)
    assert (refused.status_code, refused.json()) == (400, {"message": f"query 'param-test' validation failed, [error] {error}"})
    assert upstream.requests() == []


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/json;charset=utf-8;charset=x",
                                          "text/plain"])
async def test_content_type_tricks_are_refused(admitting, upstream, content_type):
    upstream.reset()
    refused = await post(admitting.url(PATH), content_type=content_type, query="?param-test=7")
    assert (refused.status_code, refused.json()) == (400, CT_REFUSED)
    assert upstream.requests() == []


@pytest.mark.parametrize("body, message", [
    (json.dumps({"jsonrpc": "1.0", "method": "initialize", "id": 1}).encode(), "property jsonrpc failed enum: [\"2.0\"]"),
    (b'{"jsonrpc": "2.0", "method": "initialize", "method": "tools/call"}', "request body is not valid JSON"),
], ids=["schema", "repeated-key"])
async def test_a_non_conforming_body_gets_kongs_400(admitting, upstream, body, message):
    upstream.reset()
    refused = await post(admitting.url(PATH), body=body, query="?param-test=7")
    assert (refused.status_code, refused.json()) == (400, {"message": message})
    assert upstream.requests() == []


# --- an LLM route: the body is the OpenAI request, judged as Kong's plugin would in front of ai-proxy ----------

LLM_SCHEMA = {"type": "object", "required": ["messages"],
              "properties": {"messages": {"type": "array", "maxItems": 2}, "model": {"type": "string"}}}


@pytest.fixture(scope="module")
def llm(workdir):
    from scripts.demo_llm_provider import Provider
    from tests.support.threaded_server import ThreadedServer

    provider = Provider()
    server = ThreadedServer(provider.app)
    server.start()
    policy = {"services": {"openai": {"url": f"{server.base_url}/v1"}}, "routes": {"chat": {
        "service": "openai", "paths": ["/chat"],
        "ai": {"route_type": "llm/v1/chat", "auth": {"header_name": "Authorization", "header_value": "Bearer sk-provider"}},
        "request_validator": {"version": "draft4", "body_schema": json.dumps(LLM_SCHEMA), "verbose_response": True,
                              "parameter_schema": [{"in": "header", "name": "X-Team", "required": True,
                                                    "schema": '{"type": "integer"}'}]}}}}
    gw = Gateway(workdir, policy, intercept=False, name="llm")
    yield gw, provider
    gw.stop()
    server.stop()


def test_llm_route_with_the_openai_sdk(llm):
    import openai

    gw, provider = llm

    def chat(team: str, messages: list[dict]):
        client = openai.OpenAI(api_key="sk-client", base_url=gw.url("/chat"), default_headers={"X-Team": team},
                               max_retries=0)
        return client.chat.completions.create(model="demo", messages=messages)

    one = [{"role": "user", "content": "hello"}]
    assert chat("7", one).choices[0].message.content == "echo: hello"
    assert len(provider.requests) == 1
    provider.requests.clear()
    for team, messages, message in (("7", one * 3, "property messages failed maxItems: 2"),
                                    ("seven", one, "header 'X-Team' validation failed, [error] wrong type: expected integer")):
        with pytest.raises(openai.BadRequestError) as refused:
            chat(team, messages)
        assert refused.value.status_code == 400 and refused.value.body == {"message": message}
    assert provider.requests == []
