"""LLM routes end to end: the official `openai` SDK through a real mitmdump running the gateway,
in gateway and intercept mode, against the demo OpenAI-compatible provider (which records what
it receives).

- answers through the gateway equal direct answers, JSON and streamed, chat and Responses;
- the provider receives the injected key only: never the client's, never the gateway's apikey;
- seed 000's three key-auth answers; the route's model and options, the consumer's and the
  group's overrides, as the provider sees them;
- audit token counts equal the provider's usage, JSON and streams, and the usage chunk the
  gateway asked for is dropped for a client that did not;
- the first token reaches the client while the provider is still streaming;
- no secret reaches the gateway's log or the audit file."""

from __future__ import annotations

import json
import re
import time

import httpx
import openai
import pytest

from scripts.demo_llm_provider import Provider
from tests.support.gateway import Gateway
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

PROVIDER_KEY = "sk-org-provider-key-7f3a9c21"
CLIENT_KEY = "sk-client-own-key-55d0e1"
ALEX_KEY, DEV_KEY, CHAT_KEY = "hello_world_alex_k1", "dev-api-key-93kd", "chat-client-key-8q"


@pytest.fixture(scope="module")
def provider():
    p = Provider()
    server = ThreadedServer(p.app)
    server.start()
    p.base = server.base_url
    yield p
    server.stop()


def policy(provider) -> dict:
    key_auth = {"key_names": ["apikey"], "hide_credentials": True}
    auth = {"header_name": "Authorization", "header_value": "Bearer {env://OPENAI_KEY}"}
    return {
        "version": 1,
        "consumer_groups": [{"name": "developer"}, {"name": "chatters"}],
        "consumers": {
            "alex": {"keys": [ALEX_KEY]},
            "dev-user": {"groups": ["developer"], "keys": [DEV_KEY]},
            "chat-client": {"groups": ["chatters"], "keys": [CHAT_KEY]},
        },
        "services": {"openai": {"url": f"{provider.base}/v1"}},
        "routes": {
            "chat": {"service": "openai", "paths": ["/chat"], "key_auth": key_auth,
                     "ai": {"route_type": "llm/v1/chat", "auth": auth,
                            "model": {"options": {"input_cost": 2.5, "output_cost": 10}}}},
            "responses": {"service": "openai", "paths": ["/anything"], "key_auth": key_auth,
                          "ai": {"route_type": "llm/v1/responses", "auth": auth,
                                 "model": {"name": "gpt-4o", "options": {"max_tokens": 512, "temperature": 1.0}},
                                 # seed 000 names GitHub's MCP server, which this policy has no route for
                                 "mcp": {"allow_unknown_servers": True}}},
            "governed-chat": {"service": "openai", "paths": ["/governed"], "key_auth": key_auth,
                              "ai": {"route_type": "llm/v1/chat", "auth": auth,
                                     "model": {"name": "gpt-4o", "options": {"max_tokens": 256, "temperature": 0.2}},
                                     "consumer_groups": {"developer": {"options": {"max_tokens": 2048}}},
                                     "consumers": {"chat-client": {"options": {"max_tokens": 1024, "temperature": 0.7}}}}},
        },
    }


@pytest.fixture(scope="module")
def gw(provider, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ai")
    audit = workdir / "audit.jsonl"
    gateway = Gateway(workdir, policy(provider), env={"OPENAI_KEY": PROVIDER_KEY},
                      extra=["--set", f"mcp_audit={audit}", "--set", "mcp_metrics=127.0.0.1:0"])
    gateway.audit = audit
    yield gateway
    gateway.stop()


def client(base: str, key: str | None = ALEX_KEY, **kw) -> openai.OpenAI:
    headers = {"apikey": key} if key else {}
    return openai.OpenAI(api_key=CLIENT_KEY, base_url=base, default_headers=headers, max_retries=0, **kw)


def audit_records(gw: Gateway, count: int) -> list[dict]:
    for _ in range(100):  # the writer thread flushes about every second
        if gw.audit.exists():
            lines = gw.audit.read_text().splitlines()
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} audit records")


def last_llm_record(gw: Gateway, before: int) -> dict:
    records = [r for r in audit_records(gw, before + 1)[before:] if "llm" in r]
    assert records, "no LLM audit record"
    return records[-1]


def n_records(gw: Gateway) -> int:
    time.sleep(1.2)  # let earlier records reach the file
    return len(gw.audit.read_text().splitlines()) if gw.audit.exists() else 0


MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to the gateway"}]


def test_chat_json_equals_direct_and_provider_gets_only_the_injected_key(gw, provider):
    direct = client(f"{provider.base}/v1", key=None).chat.completions.create(model="demo", messages=MESSAGES)
    provider.requests.clear()
    before = n_records(gw)
    via = client(gw.url("/chat")).chat.completions.create(model="demo", messages=MESSAGES)
    assert via.choices[0].message.content == direct.choices[0].message.content == "echo: say hello to the gateway"
    assert via.usage == direct.usage
    [seen] = provider.requests
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert "apikey" not in seen["headers"]
    assert CLIENT_KEY not in json.dumps(seen) and ALEX_KEY not in json.dumps(seen)
    rec = last_llm_record(gw, before)
    assert rec["route"] == "chat" and rec["consumer"]["name"] == "alex"
    llm = rec["llm"]
    assert (llm["prompt_tokens"], llm["completion_tokens"], llm["total_tokens"]) == (
        direct.usage.prompt_tokens, direct.usage.completion_tokens, direct.usage.total_tokens)
    assert llm["cost"] == pytest.approx((direct.usage.prompt_tokens * 2.5 + direct.usage.completion_tokens * 10) / 1e6)
    assert llm["stream"] is False and llm["model"] == "demo"


def _chunks(stream) -> list[dict]:
    return [c.model_dump(exclude={"id", "created"}) for c in stream]


def test_chat_stream_without_include_usage_is_the_clients_stream_and_is_counted(gw, provider):
    direct = _chunks(client(f"{provider.base}/v1", key=None).chat.completions.create(
        model="demo", messages=MESSAGES, stream=True))
    provider.requests.clear()
    before = n_records(gw)
    via = _chunks(client(gw.url("/chat")).chat.completions.create(model="demo", messages=MESSAGES, stream=True))
    assert via == direct  # no usage chunk, no "usage" field: what the client asked for
    assert all(c.get("usage") is None for c in via) and all(c["choices"] for c in via)
    [seen] = provider.requests
    assert seen["body"]["stream_options"] == {"include_usage": True}  # asked for by the gateway
    llm = last_llm_record(gw, before)["llm"]
    words = len("echo: say hello to the gateway".split())
    assert (llm["prompt_tokens"], llm["completion_tokens"]) == (len("be brief say hello to the gateway".split()), words)
    assert llm["stream"] is True and llm["time_to_first_token_ms"] is not None


def test_chat_stream_with_include_usage_keeps_the_usage_chunk(gw, provider):
    kw = dict(model="demo", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    direct = _chunks(client(f"{provider.base}/v1", key=None).chat.completions.create(**kw))
    before = n_records(gw)
    via = _chunks(client(gw.url("/chat")).chat.completions.create(**kw))
    assert via == direct and via[-1]["choices"] == [] and via[-1]["usage"]["total_tokens"] > 0
    llm = last_llm_record(gw, before)["llm"]
    assert llm["total_tokens"] == via[-1]["usage"]["total_tokens"]


def test_responses_json_and_stream_with_the_routes_model_and_options(gw, provider):
    provider.requests.clear()
    before = n_records(gw)
    oai = client(gw.url("/anything"))
    answer = oai.responses.create(model="gpt-4o", input="How do I use GitHub MCP?", temperature=0.1, max_output_tokens=9999)
    assert answer.output_text == "echo: How do I use GitHub MCP?"
    sent = provider.requests[-1]
    assert sent["path"] == "/v1/responses"
    assert (sent["body"]["temperature"], sent["body"]["max_output_tokens"]) == (1.0, 512)  # the route's replace the client's
    llm = last_llm_record(gw, before)["llm"]
    assert (llm["prompt_tokens"], llm["completion_tokens"]) == (answer.usage.input_tokens, answer.usage.output_tokens)

    before = n_records(gw)
    events = list(oai.responses.create(model="gpt-4o", input="stream this please", stream=True))
    assert events[-1].type == "response.completed"
    completed = events[-1].response.usage
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: stream this please"
    llm = last_llm_record(gw, before)["llm"]
    assert (llm["prompt_tokens"], llm["completion_tokens"], llm["total_tokens"]) == (
        completed.input_tokens, completed.output_tokens, completed.total_tokens)


def test_seed_000_key_auth_answers(gw, provider):
    body = {"tools": [{"type": "mcp", "server_label": "gitmcp", "server_url": "https://api.githubcopilot.com/mcp/",
                       "require_approval": "never", "headers": {"Authorization": "Bearer ghp_x"}}],
            "input": "How do I use GitHub MCP?"}
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    ok = httpx.post(gw.url("/anything"), json=body, headers={**auth, "apikey": ALEX_KEY}, timeout=30)
    assert ok.status_code == 200 and ok.json()["model"] == "gpt-4o"  # the route's model filled in
    wrong = httpx.post(gw.url("/anything"), json=body, headers={**auth, "apikey": "another_key"}, timeout=30)
    assert (wrong.status_code, wrong.json()) == (401, {"message": "Unauthorized"})
    missing = httpx.post(gw.url("/anything"), json=body, headers=auth, timeout=30)
    # the seed's "Unauthorized: No API key found in request": the status's reason phrase and Kong's body
    assert (missing.status_code, missing.reason_phrase, missing.json()) == (
        401, "Unauthorized", {"message": "No API key found in request"})
    with pytest.raises(openai.AuthenticationError):
        client(gw.url("/anything"), key="another_key").responses.create(model="gpt-4o", input="hi")


def test_another_model_is_refused_as_kong_does(gw, provider):
    provider.requests.clear()
    with pytest.raises(openai.BadRequestError) as e:
        client(gw.url("/anything")).responses.create(model="gpt-3.5-turbo", input="hi")
    assert "cannot use own model - must be: gpt-4o" in str(e.value)
    assert provider.requests == []  # refused before anything reached the provider


def test_consumer_and_group_overrides_reach_the_provider(gw, provider):
    def sent_options(key: str) -> tuple:
        provider.requests.clear()
        client(gw.url("/governed"), key=key).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)
        body = provider.requests[-1]["body"]
        return body["model"], body["max_tokens"], body["temperature"]

    assert sent_options(ALEX_KEY) == ("gpt-4o", 256, 0.2)  # the route's
    assert sent_options(DEV_KEY) == ("gpt-4o", 2048, 0.2)  # the developer group's max_tokens
    assert sent_options(CHAT_KEY) == ("gpt-4o", 1024, 0.7)  # seed 002's chat-client


def test_intercept_mode_with_the_sdk_through_the_proxy(gw, provider):
    provider.requests.clear()
    http = openai.DefaultHttpxClient(proxy=gw.proxy_url)
    oai = client(f"{provider.base}/v1", http_client=http)
    answer = oai.chat.completions.create(model="demo", messages=MESSAGES)  # the first chat route of that origin
    assert answer.choices[0].message.content == "echo: say hello to the gateway"
    seen = provider.requests[-1]
    assert seen["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}" and "apikey" not in seen["headers"]
    with pytest.raises(openai.AuthenticationError):
        client(f"{provider.base}/v1", key=None, http_client=http).chat.completions.create(model="demo", messages=MESSAGES)
    # the same origin's Responses route serves /v1/responses (its model and options), both from one policy
    reply = oai.responses.create(model="gpt-4o", input="hi")
    assert reply.output_text == "echo: hi" and provider.requests[-1]["body"]["max_output_tokens"] == 512
    assert provider.requests[-1]["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    count = len(provider.requests)
    with pytest.raises(openai.APIStatusError) as e:  # any other path of a governed provider: refused, never passed
        oai.models.list()
    assert e.value.status_code == 405 and len(provider.requests) == count


def test_first_token_arrives_while_the_provider_still_streams(gw, provider):
    oai = client(gw.url("/chat"), default_query=None)
    start = time.monotonic()
    stream = oai.chat.completions.with_raw_response.create(
        model="demo", messages=MESSAGES, stream=True, extra_headers={"x-demo-delay": "0.4", "x-demo-words": "5"})
    times = [time.monotonic() - start for _ in stream.parse()]
    assert times[-1] > 2.0  # 7 events, 0.4 s apart
    assert times[0] < 1.2  # the first came as it was sent, not with the rest


def test_attacker_keys_never_reach_the_provider(gw, provider):
    provider.requests.clear()
    # a provider key in the headers OpenAI-compatible APIs use, and the gateway key in the query string
    for url, key_header in ((gw.url("/chat"), {"apikey": ALEX_KEY}), (gw.url("/chat") + f"?apikey={ALEX_KEY}&x=1", {})):
        httpx.post(url, headers={**key_header, "api-key": CLIENT_KEY, "x-api-key": CLIENT_KEY,
                                 "Authorization": f"Bearer {CLIENT_KEY}", "Proxy-Authorization": "Basic eDp5"},
                   json={"model": "demo", "messages": MESSAGES}, timeout=30).raise_for_status()
        seen = provider.requests[-1]
        text = json.dumps(seen)
        assert CLIENT_KEY not in text and ALEX_KEY not in text and "proxy-authorization" not in seen["headers"]
        assert seen["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert seen["query"] == "x=1"  # the rest of the query string goes on
    # a body that is not an OpenAI request is refused in OpenAI's error form, not forwarded
    provider.requests.clear()
    bad = httpx.post(gw.url("/chat"), headers={"apikey": ALEX_KEY}, content=b"[1,2]", timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(gw.url("/chat/models"), headers={"apikey": ALEX_KEY}, timeout=30).status_code == 405
    assert provider.requests == []


def test_no_secret_in_the_log_or_the_audit(gw, provider):
    time.sleep(1.2)
    for secret in (PROVIDER_KEY, CLIENT_KEY, ALEX_KEY, DEV_KEY):
        assert secret not in gw.log() and secret not in gw.audit.read_text()


def test_metrics_count_llm_calls_and_tokens(gw, provider):
    port = re.search(r"metrics listening at http://127\.0\.0\.1:(\d+)/metrics", gw.log()).group(1)
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert re.search(r'mcp_gateway_llm_tokens_total\{consumer="alex",kind="prompt",model="demo",route="chat",status="200"\} [1-9]',
                     scraped), scraped[-3000:]
    assert 'mcp_gateway_llm_requests_total{consumer="chat-client",model="gpt-4o",route="governed-chat",status="200"}' in scraped
