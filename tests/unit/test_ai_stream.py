"""ai/answers.py's LlmStream on real provider streams (the demo provider's), cut into chunks at
every place: the events the client gets and the usage counted never depend on where TCP split
the stream."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from mcpgw.ai.answers import LlmStream
from mcpgw.ai.request import LlmState
from mcpgw.ai.settings import AiSettings
from scripts.demo_llm_provider import Provider

MESSAGES = [{"role": "user", "content": "one two three four"}]


def provider_stream(path: str, body: dict) -> bytes:
    transport = httpx.ASGITransport(app=Provider().app)

    async def get() -> bytes:
        async with httpx.AsyncClient(transport=transport, base_url="http://provider") as c:
            return (await c.post(path, json=body)).content

    import asyncio
    return asyncio.run(get())


def relay(raw: bytes, state: LlmState, cuts: list[int]) -> bytes:
    stream, out, last = LlmStream(state), [], 0
    for cut in [*cuts, len(raw)]:
        out += stream(raw[last:cut])
        last = cut
    out += stream(b"")
    return b"".join(out)


def state(route_type: str, injected: bool = False) -> LlmState:
    s = LlmState(AiSettings(route_type=route_type), "demo", AiSettings(route_type=route_type).model.options, stream=True)
    s.usage_injected = injected
    return s


def events(raw: bytes) -> list:
    return [json.loads(line[6:]) if line[6:] != b"[DONE]" else "[DONE]"
            for line in raw.split(b"\n") if line.startswith(b"data: ")]


CHAT = provider_stream("/v1/chat/completions", {"model": "demo", "messages": MESSAGES, "stream": True,
                                                "stream_options": {"include_usage": True}})
RESPONSES = provider_stream("/v1/responses", {"model": "demo", "input": "one two three four", "stream": True})


@pytest.mark.parametrize("seed", range(40))
def test_chat_usage_and_events_whatever_the_cuts(seed):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(CHAT)), rng.randint(1, 60)))
    kept = state("llm/v1/chat")
    assert relay(CHAT, kept, cuts) == CHAT  # the client asked for usage: byte for byte the provider's
    assert (kept.usage.prompt_tokens, kept.usage.completion_tokens) == (4, 5)
    dropped = state("llm/v1/chat", injected=True)
    out = events(relay(CHAT, dropped, cuts))
    assert out[-1] == "[DONE]" and all(e["choices"] and "usage" not in e for e in out[:-1])
    assert len(out) == len(events(CHAT)) - 1  # only the usage chunk is gone
    assert (dropped.usage.prompt_tokens, dropped.usage.total_tokens) == (4, 9)


def test_chat_stream_cut_at_every_byte():
    s = state("llm/v1/chat", injected=True)
    out = relay(CHAT, s, list(range(1, len(CHAT))))
    assert s.usage.total_tokens == 9 and b'"usage"' not in out and out.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("seed", range(20))
def test_responses_usage_from_completed_whatever_the_cuts(seed):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(RESPONSES)), rng.randint(1, 80)))
    s = state("llm/v1/responses")
    assert relay(RESPONSES, s, cuts) == RESPONSES
    assert (s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.total_tokens) == (4, 5, 9)
    assert s.first_token is not None


def test_a_stream_without_usage_counts_none_and_an_oversized_event_ends_the_stream():
    s = state("llm/v1/responses")
    cut = RESPONSES[:RESPONSES.index(b"event: response.completed")]
    relay(cut, s, [])
    assert s.usage is None  # never a guess
    small = LlmState(AiSettings(route_type="llm/v1/chat", max_response_event=64), "demo",
                     AiSettings(route_type="llm/v1/chat").model.options, stream=True)
    out = relay(b"data: " + b"x" * 500 + b"\n\n", small, [100, 200])
    assert out == b"" and small.stream_error


def test_chat_chunks_are_judged_on_their_bytes_and_only_the_usage_chunk_is_parsed(monkeypatch):
    from mcpgw.protocol import sse

    built, real = [], sse._build_event
    monkeypatch.setattr(sse, "_build_event", lambda *a, **k: built.append(1) or real(*a, **k))
    s = state("llm/v1/chat", injected=True)
    out = relay(CHAT, s, [])
    assert built == [1] and s.usage.total_tokens == 9 and s.first_token is not None  # the usage-only chunk
    assert all(e["choices"] and "usage" not in e for e in events(out)[:-1])


@pytest.mark.parametrize("dress", [
    lambda raw: raw.replace(b"\n", b"\r\n"),  # CRLF line endings: the byte cut does not apply, parsing does
    lambda raw: raw.replace(b"data: {", b": keep-alive\ndata: {"),  # a comment line in every event
    lambda raw: raw.replace(b',"usage":null}', b',\ndata: "usage":null}'),  # the JSON over two data lines
])
def test_chat_chunks_in_other_shapes_give_the_same_events(dress):
    s = state("llm/v1/chat", injected=True)
    out = relay(dress(CHAT), s, []).replace(b"\r\n", b"\n")
    assert events(out) == events(relay(CHAT, state("llm/v1/chat", injected=True), []))
    assert s.usage.total_tokens == 9
