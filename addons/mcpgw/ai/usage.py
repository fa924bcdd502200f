"""Token accounting: what each LLM call used, for audit, metrics and the rate limiter.

The interface for other concerns is small on purpose:

    from mcpgw.ai import usage
    unsubscribe = usage.subscribe(listener)   # listener(call: usage.LlmCall) -> None

A listener is called once per finished LLM call (JSON or stream, success or error), in the
event loop, after the answer has reached the client: it must be quick (count, never block). A
listener that raises is logged and skipped; it never fails the flow. `totals()` gives the
running sums the Prometheus collector exports."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("mcpgw.ai")


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class LlmCall:
    route: str
    consumer: str | None  # username (or id) of the caller; None for an anonymous one
    groups: tuple[str, ...]
    model: str | None  # the model the provider answered with (or the one sent)
    status: int | None  # HTTP status the client got; None when the flow failed
    usage: Usage | None  # None when the provider reported none (an error, a cut stream)
    cost: float | None  # from the route's input_cost / output_cost per million tokens
    latency_ms: float | None
    ttft_ms: float | None  # time to first token (streams) or to the answer's headers (JSON)
    streamed: bool


Listener = Callable[[LlmCall], None]
_listeners: list[Listener] = []
_lock = threading.Lock()
_totals: dict[tuple[str, str, str, str], list[int]] = {}  # (route, consumer, model, status) -> [calls, prompt, completion]
MAX_SERIES = 2000  # label combinations kept; others are counted under "other"


def subscribe(listener: Listener) -> Callable[[], None]:
    _listeners.append(listener)

    def unsubscribe() -> None:
        if listener in _listeners:
            _listeners.remove(listener)

    return unsubscribe


def publish(call: LlmCall) -> None:
    key = (call.route, call.consumer or "anonymous", call.model or "none", str(call.status or "error"))
    with _lock:
        if key not in _totals and len(_totals) >= MAX_SERIES:
            key = (call.route, "other", "other", key[3])
        row = _totals.setdefault(key, [0, 0, 0])
        row[0] += 1
        if call.usage is not None:
            row[1] += call.usage.prompt_tokens
            row[2] += call.usage.completion_tokens
    for listener in list(_listeners):
        try:
            listener(call)
        except Exception:  # the call is already answered: a failing listener only loses its own accounting
            log.exception("LLM usage listener failed")


def totals() -> dict[tuple[str, str, str, str], tuple[int, int, int]]:
    with _lock:
        return {k: (v[0], v[1], v[2]) for k, v in _totals.items()}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse(obj: Any) -> Usage | None:
    """A `usage` object of either API: chat's prompt/completion_tokens or Responses'
    input/output_tokens. None when it is absent or malformed (never a guess)."""
    if not isinstance(obj, dict):
        return None
    prompt = _int(obj.get("prompt_tokens", obj.get("input_tokens")))
    completion = _int(obj.get("completion_tokens", obj.get("output_tokens")))
    if prompt is None or completion is None:
        return None
    total = _int(obj.get("total_tokens"))
    return Usage(prompt, completion, total if total is not None else prompt + completion)


def cost(usage: Usage | None, input_cost: float | None, output_cost: float | None) -> float | None:
    if usage is None or (input_cost is None and output_cost is None):
        return None
    return round((usage.prompt_tokens * (input_cost or 0) + usage.completion_tokens * (output_cost or 0)) / 1e6, 9)
