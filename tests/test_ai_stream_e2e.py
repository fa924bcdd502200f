"""LLM streams are never buffered: a 50 MB chat stream through a real mitmdump grows the gateway's
memory by less than 30 MB, and arrives whole with its usage counted."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from scripts.demo_llm_provider import Provider
from tests.support.gateway import Gateway
from tests.support.threaded_server import ThreadedServer

pytestmark = pytest.mark.e2e

KEY = "stream-consumer-key"
WORDS, WORD_SIZE = 25_000, 2_000  # about 50 MB of content, in 25,000 events


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_a_50_mb_stream_is_not_held(tmp_path):
    provider = Provider()
    server = ThreadedServer(provider.app)
    server.start()
    policy = {"version": 1, "consumers": {"agent": {"keys": [KEY]}},
              "services": {"llm": {"url": server.base_url + "/v1"}},
              "routes": {"llm": {"service": "llm", "paths": ["/llm"], "key_auth": {"key_names": ["apikey"]},
                                 "ai": {"route_type": "llm/v1/chat"}}}}
    gw = Gateway(tmp_path, policy, intercept=False, extra=["--set", f"mcp_audit={tmp_path / 'audit.jsonl'}"])
    try:
        pid = gw.process.proc.pid
        body = {"model": "demo", "messages": [{"role": "user", "content": "big"}], "stream": True}
        headers = {"apikey": KEY, "x-demo-words": str(WORDS), "x-demo-word-size": str(WORD_SIZE)}
        httpx.post(gw.url("/llm/chat/completions"), json={**body, "stream": False},
                   headers={"apikey": KEY}, timeout=30).raise_for_status()  # warm: imports, connections
        before = rss(pid)
        peak, done = before, threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss(pid))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        received, last = 0, b""
        with httpx.stream("POST", gw.url("/llm/chat/completions"), json=body, headers=headers, timeout=120) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw():
                received += len(chunk)
                last = (last + chunk)[-200:]
        done.set()
        watcher.join()
        assert received > 50_000_000 and last.endswith(b"data: [DONE]\n\n")
        assert peak - before < 30 * 1024 * 1024, f"gateway grew by {(peak - before) / 1e6:.1f} MB"
        time.sleep(1.5)
        records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        llm = [r["llm"] for r in records if "llm" in r and r["llm"]["stream"]]
        assert llm[-1]["completion_tokens"] == WORDS  # the usage the gateway asked for, from the last chunk
    finally:
        gw.stop()
        server.stop()
