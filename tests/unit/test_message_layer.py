import gzip
import json

from mcpgw.protocol.messages import SSEStream, apply_transforms, message_event_transform, transform_json_body

LIST = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "a"}, {"name": "b"}], "nextCursor": "x"}}


def drop_b(msg: dict) -> dict:
    tools = msg.get("result", {}).get("tools")
    if tools is None:
        return msg
    return {**msg, "result": {**msg["result"], "tools": [t for t in tools if t["name"] != "b"]}}


def boom(msg: dict) -> dict:
    raise RuntimeError("cannot decide")


def sse(*messages: dict, event: str = "message") -> bytes:
    return b"".join(f"event: {event}\nid: {i}\ndata: {json.dumps(m)}\n\n".encode() for i, m in enumerate(messages))


def run(stream: SSEStream, body: bytes, step: int) -> bytes:
    out = []
    for i in range(0, len(body), step):
        out += stream(body[i:i + step])
    out += stream(b"")
    assert all(out), "an empty chunk would end an HTTP/1.1 chunked response"
    return b"".join(out)


def test_unchanged_events_pass_byte_for_byte_across_any_split():
    notification = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
    body = b": keep-alive\r\n\r\n" + sse(notification, LIST).replace(b"\n", b"\r\n")
    for step in (1, 2, 7, 64, len(body)):
        assert run(SSEStream([message_event_transform([lambda m: m])]), body, step) == body


def test_changed_events_are_reencoded_and_keep_their_id():
    out = run(SSEStream([message_event_transform([drop_b])]), sse(LIST), 5)
    assert b"id: 0" in out
    data = json.loads(out.split(b"data: ")[1].split(b"\n")[0])
    assert data["result"] == {"tools": [{"name": "a"}], "nextCursor": "x"}


def test_gzip_stream_is_decoded_incrementally():
    body = gzip.compress(sse(LIST, LIST))
    out = run(SSEStream([message_event_transform([drop_b])], content_encoding="gzip"), body, 3)
    assert out.count(b'"name":"a"') == 2 and b'"name":"b"' not in out


def test_failing_transform_withholds_the_message():
    out = run(SSEStream([message_event_transform([boom])]), sse(LIST), 4)
    data = json.loads(out.split(b"data: ")[1].split(b"\n")[0])
    assert data["id"] == 1 and data["error"]["code"] == -32603 and "tools" not in out.decode()


def test_broken_stream_ends_with_a_notice_and_nothing_more():
    stream = SSEStream([], content_encoding="gzip")
    first = stream(b"this is not gzip")
    assert b"withheld" in b"".join(first)
    assert stream(sse(LIST)) == [] and stream(b"") == []


def test_batches_and_json_bodies():
    batch = [LIST, {"jsonrpc": "2.0", "id": 2, "result": {}}]
    new = apply_transforms(batch, [drop_b])
    assert new is not batch and new[1] is batch[1] and new[0]["result"]["tools"] == [{"name": "a"}]
    assert apply_transforms(batch, [lambda m: m]) is batch
    assert transform_json_body(json.dumps(LIST).encode(), [lambda m: m]) is None
    assert json.loads(transform_json_body(json.dumps(LIST).encode(), [drop_b]))["result"]["tools"] == [{"name": "a"}]
    assert transform_json_body(b"not json", [drop_b]) is None
    empty = {"jsonrpc": "2.0", "id": 3, "result": {"tools": [], "meta": {}}}
    assert transform_json_body(json.dumps(empty).encode(), [drop_b]) == b'{"jsonrpc":"2.0","id":3,"result":{"tools":[],"meta":{}}}'
