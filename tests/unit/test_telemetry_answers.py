"""telemetry/answers.py: errors read from upstream answers as they stream, chunks relayed unchanged."""

from __future__ import annotations

import json

import pytest

from mcpgw.telemetry.answers import MAX_UNIT, TOOL_ERROR, Watch, body_errors, id_key


def sse(*messages: dict, crlf: bool = True) -> bytes:
    nl = b"\r\n" if crlf else b"\n"
    return b"".join(b"event: message" + nl + b"data: " + json.dumps(m).encode() + nl + nl for m in messages)


def feed(watch: Watch, body: bytes, size: int) -> bytes:
    out = b""
    for i in range(0, len(body), size):
        out += b"".join(watch(body[i:i + size]))
    out += b"".join(watch(b""))
    return out


ERR = {"jsonrpc": "2.0", "id": 7, "error": {"code": -32602, "message": "Unknown tool: x"}}
TOOL_ERR = {"jsonrpc": "2.0", "id": "a", "result": {"content": [{"type": "text", "text": "boom"}], "isError": True}}
OK = {"jsonrpc": "2.0", "id": 8, "result": {"content": [{"type": "text", "text": 'says \\"error\\": "isError": true'}]}}
NOTE = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": {"error": 1}}}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17, 4096])
@pytest.mark.parametrize("crlf", [True, False])
def test_sse_errors_found_whatever_the_chunking(size, crlf):
    body = sse(NOTE, OK, ERR, TOOL_ERR, crlf=crlf)
    watch = Watch(True, sse=True)
    assert feed(watch, body, size) == body  # relayed byte for byte
    assert watch.errors == {id_key(7): -32602, id_key("a"): TOOL_ERROR}


@pytest.mark.parametrize("size", [1, 7, 100000])
def test_json_body_and_batch(size):
    for doc, expected in ((ERR, {id_key(7): -32602}), ([OK, TOOL_ERR], {id_key("a"): TOOL_ERROR}), (OK, {})):
        body = json.dumps(doc).encode()
        watch = Watch(True, sse=False)
        assert feed(watch, body, size) == body
        assert watch.errors == expected
        buffered: dict = {}
        body_errors(body, buffered)
        assert buffered == expected


def test_a_success_quoting_the_keys_is_no_error():
    watch = Watch(True, sse=False)
    feed(watch, json.dumps(OK).encode(), 3)
    assert watch.errors == {}


def test_an_answer_over_the_limit_is_relayed_and_not_read():
    big = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "x" * (MAX_UNIT + 10)}}
    body = sse(big, ERR)
    watch = Watch(True, sse=True)
    assert feed(watch, body, 1000) == body
    assert watch.errors == {id_key(7): -32602}  # the next event is read again


def test_garbage_and_wrong_shapes_do_not_raise():
    for body in (b'{"error": ', b'data: {"error": [1]}\n\n', b'data: {"id": 1, "error": {"code": "x"}}\n\n',
                 b'data: {"id": 1, "error": {"code": true}}\n\n'):
        watch = Watch(True, sse=body.startswith(b"data"))
        assert feed(watch, body, 4) == body
    assert watch.errors == {id_key(1): "_OTHER"}


def test_hands_chunks_to_the_stream_already_set():
    seen = []

    def inner(chunk: bytes):
        seen.append(chunk)
        return [chunk.upper()] if chunk else []

    watch = Watch(inner, sse=True)
    body = sse(ERR)
    assert feed(watch, body, 10) == body.upper()
    assert b"".join(seen) == body and seen[-1] == b""
    assert watch.errors == {id_key(7): -32602}


def test_successes_are_not_parsed(monkeypatch):
    """MCP results carry "isError": false: seeing it must not cost a parse of every answer."""
    import mcpgw.telemetry.answers as answers

    parsed = []
    monkeypatch.setattr(answers.json, "loads", lambda *a, **k: parsed.append(a))  # (a raise would be swallowed)
    ok = {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": "x" * 5000}], "isError": False}}
    for sse_mode, body in ((True, sse(ok, ok)), (False, json.dumps(ok).encode())):
        watch = Watch(True, sse=sse_mode)
        assert feed(watch, body, 7) == body
        assert watch.errors == {} and parsed == []


def test_the_mark_is_the_look_behind_pattern_it_replaced():
    """_MARK tests the backslash after the quote (so that the search begins with a literal): it must
    find exactly what the look-behind form finds, on every string built from the pieces that matter."""
    import itertools
    import re

    from mcpgw.telemetry.answers import _MARK

    reference = re.compile(rb'(?<!\\)"(?:error"\s*:\s*\{|isError"\s*:\s*true)')
    pieces = [b"\\", b'"', b"error", b"isError", b":", b" ", b"{", b"true", b"x"]
    for n in range(1, 6):
        for parts in itertools.product(pieces, repeat=n):
            text = b"".join(parts)
            for probe in (text, b'"error":{' + text, text + b'"isError": true', b"\\" + text):
                found, expected = _MARK.search(probe), reference.search(probe)
                assert (found and found.span()) == (expected and expected.span()), probe


def test_event_ends_are_the_regex_s():
    """event_ends finds with bytes.find what the regex it replaced found, on every string of CR, LF
    and another byte up to eight long."""
    import itertools
    import re

    from mcpgw.telemetry.answers import event_ends

    reference = re.compile(rb"\r\n\r\n|\n\n|\r\r")
    for n in range(1, 9):
        for parts in itertools.product([b"\r", b"\n", b"x"], repeat=n):
            text = b"".join(parts)
            assert list(event_ends(text)) == [m.span() for m in reference.finditer(text)], text
