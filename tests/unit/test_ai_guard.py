"""ai/guard.py: which text the prompt guard scans, and patterns that stay linear on long prompts."""

from __future__ import annotations

import time

from mcpgw.ai.guard import PromptGuard, compile_pattern, prompts


def test_only_the_last_user_message_unless_asked():
    body = {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "first"},
                         {"role": "assistant", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "last"}]}]}
    assert prompts(body, PromptGuard(), responses=False) == ["last"]
    assert prompts(body, PromptGuard(allow_all_conversation_history=True), responses=False) == ["first", "last"]
    assert prompts(body, PromptGuard(allow_all_conversation_history=True, match_all_roles=True), False) == ["sys", "first", "a", "last"]
    assert prompts({"input": "hello", "instructions": "be nice"}, PromptGuard(), responses=True) == ["hello"]
    assert prompts({"input": "hello", "instructions": "be nice"}, PromptGuard(match_all_roles=True, allow_all_conversation_history=True),
                   responses=True) == ["be nice", "hello"]


def test_leading_and_trailing_dot_star_are_dropped_and_matching_stays_fast():
    assert compile_pattern("(?i).*GitHub MCP.*").pattern == "(?i)GitHub MCP"
    rx = compile_pattern(".*(hacking|hijacking|exploit|bypass|malware).*")
    text = "a" * 1_000_000
    start = time.perf_counter()
    assert rx.search(text) is None and rx.search(text + " exploit") is not None
    assert time.perf_counter() - start < 1.0
