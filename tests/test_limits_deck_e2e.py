"""Kong's doc case 18 (the govern-mcp-traffic how-to) as written, its ai-rate-limiting-advanced
included (openai: 1 token per 10 s, sliding), loaded by a real mitmdump; the page's validation
script sent as written (six requests, 2 s apart, 20 s after the third) answers as the page says:
200, 429, 429, 200, 429, 429. The demo provider stands in for OpenAI (model.options.upstream_url,
as in tests/test_ai_deck_e2e.py; and the service's URL, which the balancer's health probe
connects to). Each call uses far more than one token, so the
page's timings leave whole seconds of slack: the refused requests fall within 10 s of a charged
one, the fourth more than 10 s after the last charge."""

from __future__ import annotations

import time

import httpx
import pytest
import yaml

from scripts.demo_llm_provider import Provider
from tests.support.gateway import Gateway
from tests.support.threaded_server import ThreadedServer
from tests.test_ai_deck_e2e import CASE_18, OPENAI_KEY, with_upstream

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not CASE_18.exists(), reason="Kong doc cases not on this machine")]

BODY = {"tools": [{"type": "mcp", "server_label": "gitmcp", "server_url": "https://api.githubcopilot.com/mcp/x/repos",
                   "require_approval": "never", "headers": {"Authorization": "Bearer $GITHUB_PAT"}}],
        "input": "How do I"}


def test_case_18_rate_limit_validation_as_the_page_says(tmp_path):
    provider = Provider()
    server = ThreadedServer(provider.app)
    server.start()
    provider.base = server.base_url
    deck = with_upstream(yaml.safe_load(CASE_18.read_text()), provider.base)
    # the route's service (httpbin.konghq.com) is not reachable from the tests either, and the
    # balancer probes a target not seen healthy for 10 s: after the page's 20 s pause it would
    deck["services"][0]["url"] = provider.base
    (tmp_path / "kong.yaml").write_text(yaml.safe_dump(deck, sort_keys=False))
    gw = Gateway(tmp_path, tmp_path / "kong.yaml", intercept=False, env={"DECK_OPENAI_API_KEY": OPENAI_KEY})
    try:
        statuses, refusals = [], []
        for i in range(1, 7):
            r = httpx.post(gw.url("/anything"), json=BODY, timeout=30,
                           headers={"Accept": "application/json", "apikey": "hello_world"})
            statuses.append(r.status_code)
            if r.status_code == 429:
                refusals.append(r)
            elif r.status_code == 200:
                assert r.json()["usage"]["total_tokens"] > 1  # far over the budget: the next calls are refused
            time.sleep(20 if i == 3 else 2)
        assert statuses == [200, 429, 429, 200, 429, 429], [l for l in gw.log().splitlines() if "target" in l or "LLM" in l][-8:]
        assert refusals[0].json() == {"message": "AI token rate limit exceeded for provider(s): openai"}
        assert refusals[0].headers["x-ai-ratelimit-limit-10-openai"] == "1"
        assert 1 <= int(refusals[0].headers["retry-after"]) <= 20
        assert len(provider.requests) == 2  # refused requests never reach the provider
    finally:
        gw.stop()
        server.stop()
