"""Prompt guard of an LLM route (Kong's ai-prompt-guard): regular expressions over the prompt.

Deny wins: a prompt matching any deny pattern is refused; with allow patterns, a prompt matching
none is refused; otherwise it goes on. Both refusals are 400 `bad request` (Kong's answer), in
OpenAI's error form, before anything reaches the provider. Scanned: the user messages' text
(chat `messages`, Responses `input`), only the last one unless
`allow_all_conversation_history`, every role's with `match_all_roles` (Responses'
`instructions` too). Patterns search (as Kong's ngx.re.find does); a leading or trailing `.*`
changes nothing a search finds and is dropped when compiled, which keeps prompts of any length
from making patterns like Kong's own examples backtrack quadratically."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from .request import LlmState, ai_error
from .settings import PromptGuard, compile_pattern

__all__ = ["PromptGuard", "check_prompt", "compile_pattern", "prompts"]

if TYPE_CHECKING:
    from ..context import FlowContext

_compiled: dict[int, tuple[PromptGuard, list[re.Pattern[str]], list[re.Pattern[str]]]] = {}


def _patterns(guard: PromptGuard) -> tuple[list[re.Pattern[str]], list[re.Pattern[str]]]:
    hit = _compiled.get(id(guard))
    if hit is None or hit[0] is not guard:  # once per policy version
        if len(_compiled) > 64:
            _compiled.clear()
        hit = _compiled[id(guard)] = (guard, [compile_pattern(p) for p in guard.allow_patterns],
                                      [compile_pattern(p) for p in guard.deny_patterns])
    return hit[1], hit[2]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompts(body: dict, guard: PromptGuard, responses: bool) -> list[str]:
    if responses:
        value = body.get("input")
        items = [{"role": "user", "content": value}] if isinstance(value, str) else value if isinstance(value, list) else []
        if guard.match_all_roles and isinstance(body.get("instructions"), str):
            items = [{"role": "system", "content": body["instructions"]}, *items]
    else:
        items = body.get("messages") if isinstance(body.get("messages"), list) else []
    chosen = [i for i in items if isinstance(i, dict) and (guard.match_all_roles or i.get("role", "user") == "user")]
    if not guard.allow_all_conversation_history:
        chosen = chosen[-1:]
    return [_text(i.get("content")) for i in chosen]


def check_prompt(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """Request phase, after ai.request.prepare (the parsed body)."""
    state: LlmState | None = ctx.ai
    guard = state.settings.prompt_guard if state is not None else None
    if guard is None or state.body is None:
        return None
    allow, deny = _patterns(guard)
    texts = prompts(state.body, guard, state.settings.route_type == "llm/v1/responses")
    if any(rx.search(t) for rx in deny for t in texts):
        return ai_error(400, "bad request", code="prompt_denied")
    if allow and not all(any(rx.search(t) for rx in allow) for t in texts):
        return ai_error(400, "bad request", code="prompt_not_allowed")
    return None
