"""Answers no transform reads (streaming.prepare_response): a small uncompressed one of declared
length is relayed whole, everything else streams as it arrives; nothing is lost either way."""

import inspect

import pytest
from mitmproxy.test import tflow

from mcpgw import context, streaming

from .test_addon import gateway, reverse_flow, through  # noqa: F401 - gateway: the fixture

CALL = b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search","arguments":{}}}'
ANSWER = b'{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}'


async def answered(addon, content: bytes, **headers):
    f = reverse_flow()
    f.request.content = CALL
    f = await through(addon, f)
    assert f.response is None and not context.get(f).server_transforms  # forwarded; nothing reads the answer
    f.response = tflow.tresp(content=content)
    f.response.headers["Content-Length"] = str(len(content))  # (tresp keeps its own body's)
    f.response.headers["Content-Type"] = headers.pop("content_type", "application/json")
    for name, value in headers.items():
        f.response.headers[name.replace("_", "-")] = value
    addon.responseheaders(f)
    return f


async def test_a_small_answer_is_relayed_whole(gateway):
    addon, _, _ = gateway
    f = await answered(addon, ANSWER)
    assert f.response.stream is False
    if inspect.isawaitable(done := addon.response(f)):
        await done
    assert f.response.raw_content == ANSWER and f.response.headers["content-length"] == str(len(ANSWER))


async def test_the_largest_whole_answer_and_the_first_streamed_one(gateway):
    addon, _, _ = gateway
    assert (await answered(addon, b"x" * streaming.WHOLE_ANSWER)).response.stream is False
    assert (await answered(addon, b"x" * (streaming.WHOLE_ANSWER + 1))).response.stream is True


@pytest.mark.parametrize("headers", [
    {"content_encoding": "gzip"},  # decoded where it must be masked: keeps its own path
    {"content_encoding": "identity"},
    {"transfer_encoding": "chunked"},  # no declared length: may be a stream of any length
    {"content_type": "text/plain", "transfer_encoding": "chunked"},
])
async def test_other_answers_stream(gateway, headers):
    addon, _, _ = gateway
    f = await answered(addon, ANSWER, **headers)
    if "transfer_encoding" in headers:
        del f.response.headers["content-length"]
        f.response.stream = None
        streaming.prepare_response(context.get(f), f)
    assert f.response.stream is True


async def test_a_declared_length_that_is_not_a_number_streams(gateway):
    """A Content-Length the gateway cannot read is mitmproxy's to refuse; it is never taken as small."""
    addon, _, _ = gateway
    for declared in ("-1", "1e3", " 12", "0x10", "١٢"):
        f = await answered(addon, ANSWER)
        f.response.headers["content-length"] = declared
        f.response.stream = None
        streaming.prepare_response(context.get(f), f)
        assert f.response.stream is True, declared


async def test_an_sse_answer_always_streams(gateway):
    addon, _, _ = gateway
    event = b"event: message\ndata: " + ANSWER + b"\n\n"
    f = await answered(addon, event, content_type="text/event-stream")
    assert f.response.stream  # raw, or through the message layer: never held
