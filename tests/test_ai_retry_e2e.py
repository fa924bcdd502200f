"""Retries after a target answered (failover_criteria http_503/http_429) and lowest-latency
balancing, end to end: demo providers (one answering 503, one 429, good ones, a slow one) behind
a real mitmdump, the official openai SDK as the client.

- a 503 or 429 from a target is retried on the next one before anything reached the client: no
  request fails, the failing target is tried once per cooldown, attempts stay within retries + 1;
- each try carries its own target's key and model, never the first target's;
- a stream that was retried is still relayed event by event (its first token before its end);
- with retries spent, or without http_* criteria, the provider's answer reaches the client as is;
- a Responses request with MCP tools is not sent again after an answer (the provider may have
  called them) unless failover_criteria has non_idempotent;
- the relay serves only the gateway's own requests: a direct or replayed request gets 403;
- lowest-latency sends nearly everything to the fast target."""

from __future__ import annotations

import contextlib
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

KEY = "retrying-consumer-key"
FIRST_KEY, SECOND_KEY = "sk-first-target-key-71", "sk-second-target-key-72"
MESSAGES = [{"role": "user", "content": "retry me"}]
CRITERIA = ["error", "timeout", "http_429", "http_503"]


def _provider(**kw) -> Provider:
    p = Provider(**kw)
    p.server = ThreadedServer(p.app)
    p.server.start()
    p.base = p.server.base_url
    return p


@pytest.fixture(scope="module")
def providers():
    found = {"down": _provider(status=503), "limited": _provider(status=429), "good": _provider(),
             "other": _provider(), "slow": _provider(delay=0.3), "thinking": _provider(delay=6.0)}
    yield found
    for p in found.values():
        p.server.stop()


def target(p: Provider, key: str, model: str, **extra) -> dict:
    return {"url": p.base + "/v1", "auth": {"header_name": "Authorization", "header_value": f"Bearer {key}"},
            "model": {"name": model}, **extra}


def start(tmp_path, targets: list[dict], route_type: str = "llm/v1/chat", **balancer) -> Gateway:
    ai = {"route_type": route_type, "targets": targets, "balancer": {"failure_cooldown": 60, "probe_after": 0, **balancer},
          "mcp": {"allow_unknown_servers": True}}
    policy = {"version": 1, "consumers": {"agent": {"keys": [KEY]}},
              "services": {"first": {"url": targets[0]["url"]}},
              "routes": {"llm": {"service": "first", "paths": ["/llm"], "key_auth": {"key_names": ["apikey"]}, "ai": ai}}}
    return Gateway(tmp_path, policy, intercept=False, extra=["--set", f"mcp_audit={tmp_path / 'audit.jsonl'}"])


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-agent-own", base_url=gw.url("/llm"), default_headers={"apikey": KEY},
                         max_retries=0, timeout=60)


def llm_records(tmp_path, count: int) -> list[dict]:
    deadline = time.monotonic() + 30
    while True:
        path = tmp_path / "audit.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        found = [json.loads(line)["llm"] for line in lines if '"llm"' in line]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def clear(providers):
    for p in providers.values():
        p.requests.clear()


@contextlib.contextmanager
def gateway(providers, tmp_path, first: str, second: str, route_type: str = "llm/v1/chat",
            models: tuple[str, str] = ("gpt-4o", "gpt-4o"), **balancer):
    """A gateway over two of the providers (each its own key and model), requests cleared first."""
    clear(providers)
    gw = start(tmp_path, [target(providers[first], FIRST_KEY, models[0]), target(providers[second], SECOND_KEY, models[1])],
               route_type, **balancer)
    try:
        yield gw
    finally:
        gw.stop()


def test_a_503_is_retried_on_the_next_target_with_its_own_key_and_model(providers, tmp_path):
    down, good = providers["down"], providers["good"]
    with gateway(providers, tmp_path, "down", "good", models=("gpt-4o", "gpt-4o-mini"),
                 failover_criteria=CRITERIA, retries=1) as gw:
        oai = client(gw)
        for i in range(10):
            if i % 2:
                assert "".join(c.choices[0].delta.content or "" for c in oai.chat.completions.create(
                    messages=MESSAGES, stream=True, model=openai.omit) if c.choices)
            else:
                assert oai.chat.completions.create(messages=MESSAGES, model=openai.omit).choices[0].message.content
        llm = llm_records(tmp_path, 10)
    assert len(down.requests) == 1 and len(good.requests) == 10  # the failed target skipped for its cooldown
    assert down.requests[0]["headers"]["authorization"] == f"Bearer {FIRST_KEY}"
    assert down.requests[0]["body"]["model"] == "gpt-4o"
    assert {r["headers"]["authorization"] for r in good.requests} == {f"Bearer {SECOND_KEY}"}
    assert {r["body"]["model"] for r in good.requests} == {"gpt-4o-mini"}
    assert FIRST_KEY not in json.dumps(good.requests) and "sk-agent-own" not in json.dumps(good.requests + down.requests)
    assert len(llm) == 10 and all(r["attempts"] <= 2 for r in llm)
    assert sum(r["attempts"] == 2 for r in llm) == 1 and {r["target"] for r in llm} == {good.base + "/v1"}
    assert {r["model"] for r in llm} == {"gpt-4o-mini"}


def test_a_retried_stream_is_relayed_event_by_event(providers, tmp_path):
    with gateway(providers, tmp_path, "limited", "good", failover_criteria=CRITERIA, retries=1) as gw:
        start_at = time.monotonic()
        stream = client(gw).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"x-demo-delay": "0.5", "x-demo-words": "5"})
        times = [time.monotonic() - start_at for _ in stream]
    assert len(providers["limited"].requests) == 1 and len(providers["good"].requests) == 1
    assert times[-1] > 3.0  # 7 events, 0.5 s apart
    assert times[0] < times[-1] - 2.0  # the first reached the client as the provider sent it


def test_spent_retries_or_no_status_criteria_pass_the_providers_answer(providers, tmp_path):
    with gateway(providers, tmp_path, "limited", "down", failover_criteria=CRITERIA, retries=1) as gw:
        with pytest.raises(openai.InternalServerError) as e:  # 429, then 503 from the last try: relayed as is
            client(gw).chat.completions.create(messages=MESSAGES, model="gpt-4o")
        assert e.value.status_code == 503
    with gateway(providers, tmp_path, "down", "good") as gw:
        with pytest.raises(openai.InternalServerError):  # Kong's default criteria: error, timeout
            client(gw).chat.completions.create(messages=MESSAGES, model="gpt-4o")
    # retries: 1 with three targets: two tries at most, the third (good) target is never asked
    clear(providers)
    gw = start(tmp_path, [target(providers[n], FIRST_KEY, "gpt-4o") for n in ("down", "limited", "good")],
               failover_criteria=CRITERIA, retries=1, algorithm="priority")
    try:
        with pytest.raises(openai.RateLimitError):
            client(gw).chat.completions.create(messages=MESSAGES, model="gpt-4o")
    finally:
        gw.stop()
    assert [len(providers[n].requests) for n in ("down", "limited", "good")] == [1, 1, 0]
    assert providers["good"].requests == []


def test_mcp_tools_are_not_sent_again_unless_non_idempotent(providers, tmp_path):
    tool = {"type": "mcp", "server_label": "x", "server_url": "https://mcp.example.com/mcp", "require_approval": "always"}
    for criteria, fails in ((CRITERIA, True), ([*CRITERIA, "non_idempotent"], False)):
        with gateway(providers, tmp_path, "down", "good", "llm/v1/responses", failover_criteria=criteria, retries=1) as gw:
            if fails:
                with pytest.raises(openai.InternalServerError):
                    client(gw).responses.create(model="gpt-4o", input="hi", tools=[tool])
            else:
                assert client(gw).responses.create(model="gpt-4o", input="hi").output_text
        assert len(providers["good"].requests) == (0 if fails else 1)


def test_the_relay_serves_only_the_gateways_requests(providers, tmp_path):
    with gateway(providers, tmp_path, "down", "good", failover_criteria=CRITERIA, retries=1) as gw:
        client(gw).chat.completions.create(messages=MESSAGES, model="gpt-4o")
        port = int(re.search(r"LLM retry relay listening on 127\.0\.0\.1:(\d+)", gw.log()).group(1))
        seen = len(providers["good"].requests)
        for headers in ({}, {"x-mcpgw-relay": "guessed"}, {"x-mcpgw-relay": ""}):
            r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"messages": MESSAGES}, headers=headers)
            assert r.status_code == 403
        assert len(providers["good"].requests) == seen and FIRST_KEY not in gw.log() and SECOND_KEY not in gw.log()


def test_lowest_latency_prefers_the_fast_target(providers, tmp_path):
    slow, fast = providers["slow"], providers["other"]
    for strategy in ("e2e", "tpot"):
        with gateway(providers, tmp_path, "slow", "other", algorithm="lowest-latency", latency_strategy=strategy) as gw:
            oai = client(gw)
            for _ in range(20):
                oai.chat.completions.create(messages=MESSAGES, model="gpt-4o")
        # each is measured once; after that the slow one scores higher until its measure decays (tens of seconds)
        assert len(slow.requests) <= 2 and len(fast.requests) >= 18, (strategy, len(slow.requests))


def test_a_retry_waits_for_a_provider_that_thinks_before_answering(providers, tmp_path):
    # more than httpx's default 5 s before the answer's headers: the retries have no read timeout
    with gateway(providers, tmp_path, "down", "thinking", failover_criteria=CRITERIA, retries=1,
                 failure_cooldown=1) as gw:
        assert client(gw).chat.completions.create(messages=MESSAGES, model="gpt-4o").choices[0].message.content
        deadline = time.monotonic() + 30
        while len(providers["down"].requests) < 2 and time.monotonic() < deadline:  # once its cooldown is over
            list(client(gw).chat.completions.create(messages=MESSAGES, model="gpt-4o", stream=True))
    assert len(providers["down"].requests) == 2 and len(providers["thinking"].requests) >= 2
