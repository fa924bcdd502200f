"""An LLM call whose provider cannot be reached: the client gets mitmproxy's 502, and the call is
still one audit record with its llm field (no usage), so listeners and the audit see every call."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.gateway import Gateway
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e


def test_a_provider_down_is_still_one_llm_record(tmp_path):
    audit = tmp_path / "audit.jsonl"
    policy = {"version": 1, "consumers": {"agent": {"keys": ["err-key-1234"]}},
              "services": {"llm": {"url": f"http://127.0.0.1:{free_port()}/v1"}},
              "routes": {"llm": {"service": "llm", "paths": ["/llm"], "key_auth": {"key_names": ["apikey"]},
                                 "ai": {"route_type": "llm/v1/chat", "model": {"name": "gpt-4o"}}}}}
    gw = Gateway(tmp_path, policy, intercept=False, extra=["--set", f"mcp_audit={audit}"])
    try:
        r = httpx.post(gw.url("/llm/chat/completions"), headers={"apikey": "err-key-1234"},
                       json={"messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert r.status_code == 502
        for _ in range(50):
            records = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
            if records:
                break
            time.sleep(0.1)
    finally:
        gw.stop()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    [record] = [r for r in records if r["route"] == "llm"]
    assert record["llm"]["model"] == "gpt-4o" and record["llm"]["total_tokens"] is None and "error" in record
