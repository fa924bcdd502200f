"""The gateway's own secrets never reach a client, on routes without `integrity:` (a real
mitmdump, a small echoing MCP upstream, the official MCP client): the credential the gateway
injects, echoed back in a JSON answer, in an SSE event, split across two network writes,
JSON-escaped, as the `user:pass` a Basic credential encodes, gzip-compressed, or dripped one byte
per write, is masked with a same-length run of `*`; so is a REST API's echo of its credential (on
its route and through a listener) and an LLM provider's of its key (the official `openai` SDK:
JSON, a stream cut inside the key, a 401 error quoting it); the audit record says so without the
value; a route that injects nothing is relayed byte for byte."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
from datetime import timedelta

import httpx
import openai
import pytest

from tests.support.gateway import MCP_HEADERS, Gateway, mcp_session
from tests.support.rest_upstream import RestUpstream
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

TOKEN = "org-upstream-token-5d1e8b2c"
KEY = 'k3y"with\\quote/and-slash-91'  # JSON writes it escaped: \" and \\
BASIC_USERPASS = "svc-robot:p4ss-w0rd-77a1"
BASIC = base64.b64encode(BASIC_USERPASS.encode()).decode()
REST_KEY = "rest-api-key-own-4c9d1e7a"
PROVIDER_KEY = "sk-org-provider-key-3b8e0f6a"
CALL_TIMEOUT = timedelta(seconds=15)
TOOLS = ["json_echo", "sse_echo", "sse_split", "json_split", "escaped", "basic", "drip", "gzip", "header"]


class EchoingUpstream:
    """An MCP upstream whose tools answer with the headers it was sent, each in another way."""

    async def __call__(self, scope, receive, send):
        body = await _body(receive)
        if scope["method"] != "POST":
            await _send(send, 405, b"", b"text/plain")
            return
        rpc = json.loads(body)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        method = rpc.get("method")
        if "id" not in rpc:
            await _send(send, 202, b"", b"text/plain")
            return
        if method == "initialize":
            result = {"protocolVersion": rpc["params"]["protocolVersion"], "capabilities": {"tools": {}},
                      "serverInfo": {"name": "echoing", "version": "1"}}
        elif method == "tools/list":
            result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]}
        elif method == "tools/call":
            await self._call(send, rpc, headers)
            return
        else:
            result = {}
        await _send(send, 200, json.dumps({"jsonrpc": "2.0", "id": rpc["id"], "result": result}).encode())

    async def _call(self, send, rpc, headers):
        name = rpc["params"]["name"]
        auth = headers.get("authorization", "")
        text = {"escaped": f"your key: {headers.get('x-upstream-key', '')}",
                "basic": f"you are {base64.b64decode(auth.split(' ', 1)[-1] or '').decode(errors='replace')} ({auth})"
                if auth.startswith("Basic ") else "no basic"}.get(name, f"bad credential: Authorization: {auth}")
        answer = json.dumps({"jsonrpc": "2.0", "id": rpc["id"], "result": {
            "content": [{"type": "text", "text": text}], "isError": False}}).encode()
        secret = auth.split(" ", 1)[-1].encode()
        if name.startswith("sse"):
            event = b"event: message\ndata: " + answer + b"\n\n"
            cut = event.index(secret) + len(secret) // 2 if name == "sse_split" and secret in event else len(event)
            await _stream(send, [event[:cut], event[cut:]], b"text/event-stream")
        elif name == "json_split":
            cut = answer.index(secret) + 5
            await _stream(send, [answer[:cut], answer[cut:]], b"application/json", len(answer))
        elif name == "drip":
            await _stream(send, [answer[i:i + 1] for i in range(len(answer))], b"application/json", len(answer))
        elif name == "gzip":
            packed = gzip.compress(answer)
            await _stream(send, [packed[:20], packed[20:]], b"application/json", len(packed), b"gzip")
        elif name == "header":  # a debugging upstream: what it got, in a response header
            await _send(send, 200, answer, extra=[(b"x-debug-auth", auth.encode())])
        else:
            await _send(send, 200, answer)


async def _body(receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def _send(send, status, body, ctype=b"application/json", extra=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


async def _stream(send, pieces, ctype, length=None, encoding=None):
    headers = [(b"content-type", ctype)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    if encoding:
        headers.append((b"content-encoding", encoding))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for piece in pieces[:-1]:
        await send({"type": "http.response.body", "body": piece, "more_body": True})
        await asyncio.sleep(0.002)  # separate network writes (the result holds however they arrive)
    await send({"type": "http.response.body", "body": pieces[-1]})


class EchoingProvider:
    """An OpenAI-compatible chat provider whose answer quotes the Authorization it got: as JSON,
    streamed (the key cut in two network writes), or as a 401 error, as some providers word it."""

    async def __call__(self, scope, receive, send):
        request = json.loads(await _body(receive))
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        said = f"you sent {auth}"
        base = {"id": "chatcmpl-1", "created": 1, "model": "m"}
        if request["messages"][-1]["content"] == "fail":
            error = {"error": {"message": f"Incorrect API key provided: {auth.removeprefix('Bearer ')}",
                               "type": "invalid_request_error", "code": "invalid_api_key"}}
            await _send(send, 401, json.dumps(error).encode())
        elif not request.get("stream"):
            answer = {**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": said}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}
            await _send(send, 200, json.dumps(answer).encode())
        else:
            chunk = {**base, "object": "chat.completion.chunk"}
            events = b"".join(b"data: " + json.dumps({**chunk, "choices": [{"index": 0, "delta": d,
                                                                              "finish_reason": f}]}).encode() + b"\n\n"
                              for d, f in (({"role": "assistant", "content": said}, None), ({}, "stop")))
            cut = events.index(PROVIDER_KEY.encode()) + 9
            await _stream(send, [events[:cut], events[cut:] + b"data: [DONE]\n\n"], b"text/event-stream")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("own-secrets")


def _served(app):
    server = ThreadedServer(app)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream():
    yield from _served(EchoingUpstream())


@pytest.fixture(scope="module")
def rest():
    server = RestUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def provider():
    yield from _served(EchoingProvider())


@pytest.fixture(scope="module")
def gateway(workdir, upstream, rest, provider):
    def inject(*headers):
        return {"mode": "inject", "allow_anonymous": True, "add": {"headers": list(headers)}}

    echo_tool = {"name": "whoami", "description": "echoes the request", "path": "whoami"}
    policy = {
        "services": {"echo": {"url": upstream.base_url + "/mcp"}, "api": {"url": rest.url + "/api"},
                     "llm": {"url": provider.base_url + "/v1"}},
        "routes": {
            "llm": {"service": "llm", "paths": ["/llm"], "ai": {"route_type": "llm/v1/chat", "auth": {
                "header_name": "Authorization", "header_value": "Bearer {env://PROVIDER_KEY}"}}},
            # REST tools: the gateway calls the API with the route's credential and answers itself
            "rest": {"service": "api", "paths": ["/rest"], "credentials": inject("X-Api-Key:{env://REST_KEY}"),
                     "rest_tools": {"mode": "conversion-listener", "tools": [echo_tool]}},
            "rest-only": {"service": "api", "paths": ["/rest-only"], "credentials": inject("X-Api-Key:{env://REST_KEY}"),
                          "rest_tools": {"mode": "conversion-only", "tags": ["own"],
                                         "tools": [{**echo_tool, "name": "whoami-too"}]}},
            "listener": {"service": "api", "paths": ["/listener"],
                         "rest_tools": {"mode": "listener", "server": {"tag": "own"}}},
            "injected": {"service": "echo", "paths": ["/injected"],
                         "credentials": inject("Authorization:Bearer {env://UPSTREAM_TOKEN}",
                                               "X-Upstream-Key:{env://UPSTREAM_KEY}")},
            "basic": {"service": "echo", "paths": ["/basic"], "credentials": inject("Authorization:Basic {env://BASIC}")},
            "plain": {"service": "echo", "paths": ["/plain"]},  # injects nothing: the client's own header goes up
        },
    }
    gw = Gateway(workdir, policy, intercept=False, env={"UPSTREAM_TOKEN": TOKEN, "UPSTREAM_KEY": KEY, "BASIC": BASIC,
                                                        "REST_KEY": REST_KEY, "PROVIDER_KEY": PROVIDER_KEY},
                 extra=["--set", f"mcp_audit={workdir / 'audit.jsonl'}"])
    yield gw
    gw.stop()


async def _texts(url: str, tools: list[str]) -> dict[str, str]:
    async with mcp_session(url) as s:
        return {t: (await s.call_tool(t, {}, read_timeout_seconds=CALL_TIMEOUT)).content[0].text for t in tools}


@pytest.mark.parametrize("tool", ["json_echo", "sse_echo", "sse_split", "json_split", "drip", "gzip"])
async def test_the_injected_token_never_reaches_the_client(gateway, tool):
    text = (await _texts(gateway.url("/injected"), [tool]))[tool]
    assert TOKEN not in text
    assert text == "bad credential: Authorization: Bearer " + "*" * len(TOKEN)


async def test_json_escaped_and_basic_forms(gateway):
    text = (await _texts(gateway.url("/injected"), ["escaped"]))["escaped"]
    assert KEY not in text and "quote" not in text and text.startswith("your key: *")
    text = (await _texts(gateway.url("/basic"), ["basic"]))["basic"]
    assert BASIC_USERPASS not in text and BASIC not in text and "p4ss-w0rd" not in text
    assert text.startswith("you are ") and text.endswith(f"(Basic {'*' * len(BASIC)})")


@pytest.mark.parametrize(("path", "tool"), [("/rest", "whoami"), ("/listener", "whoami-too")])
async def test_a_rest_api_echoing_its_credential(gateway, rest, path, tool):
    rest.reset()
    text = (await _texts(gateway.url(path), [tool]))[tool]
    assert dict(rest.received[-1]["headers"])["x-api-key"] == REST_KEY  # the API got it...
    assert REST_KEY not in text and "*" * len(REST_KEY) in text  # ...its echo never reaches the caller


def test_an_llm_provider_echoing_its_key(gateway):
    llm = openai.OpenAI(api_key="sk-the-clients-own-key-00", base_url=gateway.url("/llm"), max_retries=0)
    ask = [{"role": "user", "content": "hi"}]
    masked = "you sent Bearer " + "*" * len(PROVIDER_KEY)
    assert llm.chat.completions.create(model="m", messages=ask).choices[0].message.content == masked
    streamed = "".join(c.choices[0].delta.content or "" for c in llm.chat.completions.create(
        model="m", messages=ask, stream=True) if c.choices)
    assert streamed == masked
    with pytest.raises(openai.AuthenticationError) as refused:
        llm.chat.completions.create(model="m", messages=[{"role": "user", "content": "fail"}])
    assert PROVIDER_KEY not in str(refused.value) and "*" * len(PROVIDER_KEY) in str(refused.value)


async def test_a_decoded_answer_is_chunked_and_keeps_the_connection(gateway):
    """A compressed answer is masked decoded, so its length changes: it goes out chunked, and the
    client's connection is reused (without framing the client would have to read to its close)."""
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "gzip", "arguments": {}}}
    ports = set()
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(2):
            resp = await client.post(gateway.url("/injected"), json=call, headers=MCP_HEADERS,
                                     extensions={"trace": lambda name, info: _peer(name, info, ports)})
            assert resp.headers.get("transfer-encoding") == "chunked" and "content-length" not in resp.headers
            assert "content-encoding" not in resp.headers and TOKEN.encode() not in resp.content
            assert "*" * len(TOKEN) in resp.json()["result"]["content"][0]["text"]
    assert len(ports) == 1  # one connection for both answers


async def _peer(name: str, info: dict, ports: set) -> None:
    if name == "connection.connect_tcp.complete":
        ports.add(info["return_value"].get_extra_info("client_addr")[1])


async def test_a_response_header_echoing_it(gateway):
    call = {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "header", "arguments": {}}}
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(gateway.url("/injected"), json=call, headers=MCP_HEADERS)
    assert resp.headers["x-debug-auth"] == "Bearer " + "*" * len(TOKEN)
    assert TOKEN.encode() not in resp.content


async def test_raw_answer_keeps_its_length_and_is_valid_json(gateway):
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "drip", "arguments": {}}}
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(gateway.url("/injected"), json=call, headers=MCP_HEADERS)
    assert resp.status_code == 200 and TOKEN.encode() not in resp.content
    assert int(resp.headers["content-length"]) == len(resp.content)
    assert json.loads(resp.content)["id"] == 3


async def test_a_route_injecting_nothing_is_byte_for_byte(gateway, upstream):
    call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "json_split", "arguments": {}}}
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}  # the client's own: not the gateway's secret
    async with httpx.AsyncClient(timeout=30) as client:
        direct = await client.post(upstream.base_url + "/mcp", json=call, headers=headers)
        relayed = await client.post(gateway.url("/plain"), json=call, headers=headers)
    assert relayed.status_code == 200 and relayed.content == direct.content and TOKEN.encode() in relayed.content


async def test_audit_says_masked_never_the_value(gateway, workdir):
    await _texts(gateway.url("/injected"), ["json_echo"])
    path = workdir / "audit.jsonl"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "integrity.own_secrets" not in (path.read_text() if path.exists() else ""):
        await asyncio.sleep(0.2)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    masked = [f for r in records for f in r.get("findings", []) if f.get("check") == "integrity.own_secrets"]
    assert masked and all(f["action"] == "masked" and f["count"] >= 1 for f in masked)
    text = path.read_text()
    assert TOKEN not in text and BASIC not in text and BASIC_USERPASS not in text
