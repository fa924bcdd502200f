"""Balanced LLM routes end to end (ai.targets): three demo providers behind a real mitmdump, the
official openai SDK as the client.

- round-robin with weights 1:2:3 distributes 60 requests 10/20/30 (smooth weighted round-robin
  is exact for one gateway process; a tolerance of 2 is allowed);
- each target gets its own key and model, and never another target's key;
- with one target down, every request succeeds, the dead target is tried at most once per
  cooldown, and the attempts the audit records stay within retries + 1."""

from __future__ import annotations

import json
import time

import openai
import pytest

from scripts.demo_llm_provider import Provider
from tests.support.gateway import Gateway
from tests.support.procs import free_port
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

KEY = "balanced-consumer-key"
ROUTE_KEY, OWN_KEY = "sk-route-key-00aa11", "sk-target-two-key-22bb33"
MESSAGES = [{"role": "user", "content": "balance me"}]


@pytest.fixture(scope="module")
def providers():
    found = []
    for _ in range(3):
        p = Provider()
        server = ThreadedServer(p.app)
        server.start()
        p.base = server.base_url
        p.server = server
        found.append(p)
    yield found
    for p in found:
        p.server.stop()


def route(targets: list[dict], **balancer) -> dict:
    return {"service": "first", "paths": ["/llm"], "key_auth": {"key_names": ["apikey"]},
            "ai": {"route_type": "llm/v1/chat", "model": {"name": "gpt-4o"},
                   "auth": {"header_name": "Authorization", "header_value": f"Bearer {ROUTE_KEY}"},
                   "targets": targets, "balancer": balancer}}


def start(tmp_path, targets, **balancer) -> Gateway:
    policy = {"version": 1, "consumers": {"agent": {"keys": [KEY]}},
              "services": {"first": {"url": targets[0]["url"]}}, "routes": {"llm": route(targets, **balancer)}}
    return Gateway(tmp_path, policy, intercept=False, extra=["--set", f"mcp_audit={tmp_path / 'audit.jsonl'}"])


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-agent", base_url=gw.url("/llm"), default_headers={"apikey": KEY}, max_retries=0)


def test_weighted_round_robin_and_per_target_keys_and_models(providers, tmp_path):
    for p in providers:
        p.requests.clear()
    targets = [{"url": providers[0].base + "/v1", "weight": 1},
               {"url": providers[1].base + "/v1", "weight": 2, "auth": {"header_name": "Authorization",
                                                                         "header_value": f"Bearer {OWN_KEY}"},
                "model": {"name": "gpt-4o-mini", "options": {"max_tokens": 64}}},
               {"url": providers[2].base + "/v1", "weight": 3}]
    gw = start(tmp_path, targets)
    try:
        oai = client(gw)
        for _ in range(60):
            oai.chat.completions.create(messages=MESSAGES, model=openai.omit)  # each target's model fills in
    finally:
        gw.stop()
    counts = [len(p.requests) for p in providers]
    assert all(abs(c - e) <= 2 for c, e in zip(counts, (10, 20, 30))), counts
    assert {r["headers"]["authorization"] for r in providers[1].requests} == {f"Bearer {OWN_KEY}"}
    assert {r["body"]["model"] for r in providers[1].requests} == {"gpt-4o-mini"}
    assert {r["body"]["max_tokens"] for r in providers[1].requests} == {64}
    for p in (providers[0], providers[2]):
        assert {r["headers"]["authorization"] for r in p.requests} == {f"Bearer {ROUTE_KEY}"}
        assert {r["body"]["model"] for r in p.requests} == {"gpt-4o"}


def test_one_target_down_no_request_fails(providers, tmp_path):
    for p in providers:
        p.requests.clear()
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    targets = [{"url": dead}, {"url": providers[0].base + "/v1"}, {"url": providers[1].base + "/v1"}]
    gw = start(tmp_path, targets, retries=1, failure_cooldown=60, probe_after=0)
    try:
        oai = client(gw)
        for i in range(30):
            stream = i % 2 == 0
            answer = oai.chat.completions.create(messages=MESSAGES, model="gpt-4o", stream=stream)
            if stream:
                list(answer)
        deadline = time.monotonic() + 30  # the audit writer flushes in the background: wait for all 30
        while True:
            path = tmp_path / "audit.jsonl"
            records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
            if sum("llm" in r for r in records) >= 30 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        gw.stop()
    assert len(providers[0].requests) + len(providers[1].requests) == 30
    llm = [r["llm"] for r in records if "llm" in r]
    assert len(llm) == 30 and all(r["attempts"] <= 2 for r in llm)  # retries: 1
    assert sum(r["attempts"] == 2 for r in llm) == 1  # the dead target was tried once, then skipped
    assert not any(r["target"] == dead for r in llm)


def test_every_target_down_is_a_503_in_openais_form(tmp_path):
    targets = [{"url": f"http://127.0.0.1:{free_port()}/v1"}, {"url": f"http://127.0.0.1:{free_port()}/v1"}]
    gw = start(tmp_path, targets, retries=3)
    try:
        with pytest.raises(openai.InternalServerError) as e:
            client(gw).chat.completions.create(messages=MESSAGES, model="gpt-4o")
        assert e.value.status_code == 503 and "No provider" in str(e.value)
    finally:
        gw.stop()


def served(tmp_path, targets: list[dict], calls: int, **balancer) -> None:
    """`calls` chat completions through a gateway balancing over `targets`."""
    gw = start(tmp_path, targets, **balancer)
    try:
        for _ in range(calls):
            client(gw).chat.completions.create(messages=MESSAGES, model="gpt-4o")
    finally:
        gw.stop()


def test_priority_falls_back_to_a_lower_weight_only_when_the_higher_fail(providers, tmp_path):
    for p in providers:
        p.requests.clear()
    dead = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    balancer = {"algorithm": "priority", "retries": 2, "probe_after": 0, "failure_cooldown": 60}
    served(tmp_path, [{"url": dead[0], "weight": 70}, {"url": providers[0].base + "/v1", "weight": 70},
                      {"url": providers[1].base + "/v1", "weight": 25}], 6, **balancer)
    assert (len(providers[0].requests), len(providers[1].requests)) == (6, 0)
    served(tmp_path, [{"url": dead[0], "weight": 70}, {"url": dead[1], "weight": 70},
                      {"url": providers[1].base + "/v1", "weight": 25}], 3, **balancer)
    assert len(providers[1].requests) == 3


def test_consistent_hashing_keeps_each_user_on_one_target(providers, tmp_path):
    for p in providers:
        p.requests.clear()
    gw = start(tmp_path, [{"url": p.base + "/v1"} for p in providers], algorithm="consistent-hashing",
               hash_on_header="X-User")
    try:
        for user in range(8):
            for _ in range(3):
                client(gw).chat.completions.create(messages=MESSAGES, model="gpt-4o", extra_headers={"X-User": f"u{user}"})
    finally:
        gw.stop()
    where = {}
    for i, p in enumerate(providers):
        for r in p.requests:
            where.setdefault(r["headers"]["x-user"], set()).add(i)
    assert len(where) == 8 and all(len(s) == 1 for s in where.values())
    assert len(set().union(*where.values())) > 1  # the users are spread, not all on one target
