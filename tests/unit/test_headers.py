"""The header index (headers.py): the same answers as mitmproxy's Headers, one index per field
tuple, and changes that keep reads and the fields in step."""

from __future__ import annotations

import pytest
from mitmproxy import http
from mitmproxy.test import tutils

from mcpgw import headers as hdr

FIELDS = [(b"Host", b"gw.example"), (b"Accept", b"application/json"), (b"X-Multi", b"one"),
          (b"accept", b"text/event-stream"), (b"X-UTF8", "caf\u00e9".encode()), (b"X-Bad", b"\xff\xfe"),
          (b"x-multi", b"two")]


def fresh() -> http.Headers:
    return http.Headers(list(FIELDS))


@pytest.mark.parametrize("name", ["host", "HOST", "accept", "Accept", "x-multi", "X-UTF8", "x-bad", "absent"])
def test_reads_agree_with_mitmproxy(name):
    h = fresh()
    assert hdr.header_values(h, name) == h.get_all(name)
    assert hdr.header(h, name) == h.get(name)
    assert hdr.header(h, name, "default") == h.get(name, "default")
    assert hdr.has_header(h, name) == (name in h)


def test_reads_follow_any_change_to_the_headers():
    h = fresh()
    assert hdr.header(h, "accept") == "application/json, text/event-stream"
    h["Accept"] = "text/plain"  # mitmproxy's own API: a new fields tuple, so the index is rebuilt
    assert hdr.header(h, "accept") == "text/plain"
    del h["x-multi"]
    assert not hdr.has_header(h, "X-Multi")
    h.fields = h.fields + ((b"X-New", b"v"),)
    assert hdr.header_values(h, "x-new") == ["v"]


def test_returned_lists_are_copies():
    h = fresh()
    hdr.header_values(h, "x-multi").append("three")
    assert hdr.header_values(h, "x-multi") == ["one", "two"]


def test_remove_and_put_change_fields_as_mitmproxy_does():
    ours, theirs = fresh(), fresh()
    assert hdr.remove(ours, "X-MULTI", "absent") is True
    del theirs["x-multi"]
    assert ours.fields == theirs.fields and not hdr.has_header(ours, "x-multi")
    assert hdr.remove(ours, "absent") is False

    for name, value in (("accept", "text/plain"), ("X-Added", "v1"), ("host", "upstream.example:8443")):
        hdr.put(ours, name, value)
        theirs[name] = value
        assert ours.fields == theirs.fields
        assert hdr.header(ours, name) == value == theirs.get(name)
    assert [hdr.header(ours, n) for n in ("x-utf8", "x-bad")] == [theirs.get("x-utf8"), theirs.get("x-bad")]


def test_replace_all_drops_every_old_value_and_appends_in_order():
    h = http.Headers([(b"X-Consumer-Groups", b"forged"), (b"Accept", b"*/*"), (b"x-consumer-groups", b"again")])
    hdr.replace_all(h, {"X-Consumer-Username": "dev-user", "X-Consumer-Groups": "developer"})
    assert h.fields == ((b"Accept", b"*/*"), (b"X-Consumer-Username", b"dev-user"),
                        (b"X-Consumer-Groups", b"developer"))
    assert hdr.header_values(h, "x-consumer-groups") == ["developer"] == h.get_all("x-consumer-groups")


def test_an_index_built_for_one_request_never_answers_for_another():
    a, b = tutils.treq(headers=http.Headers(host="a.example")), tutils.treq(headers=http.Headers(host="b.example"))
    assert hdr.host_header(a) == "a.example"
    assert hdr.host_header(b) == "b.example"
    assert hdr.host_header(a) == "a.example"


def test_host_header_reads_authority_on_http2():
    req = tutils.treq(http_version=b"HTTP/2.0", authority=b"gw.example:8443", headers=http.Headers())
    assert hdr.host_header(req) == req.host_header == "gw.example:8443"


@pytest.mark.parametrize(("version", "chunked"), [("HTTP/1.1", True), ("HTTP/1.0", False), ("HTTP/2.0", False)])
def test_reframe_as_chunked_frames_by_the_clients_protocol(version, chunked):
    from mitmproxy.test import tflow

    flow = tflow.tflow(resp=True)
    flow.request.http_version = version
    flow.response.headers["content-length"] = "1234"
    hdr.reframe_as_chunked(flow)
    assert "content-length" not in flow.response.headers
    assert (flow.response.headers.get("transfer-encoding") == "chunked") is chunked
    hdr.reframe_as_chunked(flow)  # once is enough: never two transfer-encoding fields
    assert len(flow.response.headers.get_all("transfer-encoding")) == (1 if chunked else 0)


@pytest.mark.parametrize("extra", [{}, {"content-encoding": "gzip"}, {"transfer-encoding": "chunked"}])
def test_set_body_leaves_what_mitmproxys_setter_leaves(extra):
    """The same fields and body as `request.content = body`, through the header index."""
    ours, theirs = tutils.treq(), tutils.treq()
    for request in (ours, theirs):
        request.headers.update({"content-length": "3", **extra})
        request.content = b"old"
    body = b'{"model":"demo","messages":[]}'
    hdr.set_body(ours, body)
    theirs.content = body
    assert ours.raw_content == theirs.raw_content and ours.content == body
    assert ours.headers.fields == theirs.headers.fields
    assert hdr.header(ours.headers, "content-length") == hdr.header(theirs.headers, "content-length")


def test_a_flows_request_and_response_headers_read_in_turn_are_indexed_once_each(monkeypatch):
    built = []
    real_remember = hdr._remember
    monkeypatch.setattr(hdr, "_remember", lambda fields, index: (built.append(fields), real_remember(fields, index)))
    req, resp = fresh(), http.Headers(content_type="application/json", content_length="2")
    for _ in range(3):  # as the audit record and the spans read them, one side then the other
        assert hdr.header(req, "host") == "gw.example"
        assert hdr.header(resp, "content-type") == "application/json"
    assert built == [req.fields, resp.fields]


def test_an_evicted_or_replaced_index_is_built_again_never_reused():
    first = fresh()
    others = [http.Headers(host=f"h{i}.example") for i in range(hdr.KEPT)]
    assert hdr.header(first, "host") == "gw.example"
    for i, h in enumerate(others):  # push `first` out of the kept indexes
        assert hdr.header(h, "host") == f"h{i}.example"
    assert all(fields is not first.fields for fields, _ in hdr._recent)
    assert hdr.header(first, "host") == "gw.example"
    first.fields = ((b"Host", b"changed.example"),)  # a new tuple: the kept index of the old one does not answer
    assert hdr.header(first, "host") == "changed.example"
    assert len(hdr._recent) == hdr.KEPT
