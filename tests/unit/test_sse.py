from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpgw.protocol.sse import SSEError, SSEEvent, SSEParser


def parse_all(data: bytes, cuts: list[int] | None = None, **kwargs) -> list[SSEEvent]:
    """Feed `data` split at the `cuts` offsets, then flush."""
    parser = SSEParser(**kwargs)
    events: list[SSEEvent] = []
    start = 0
    for cut in sorted(cuts or []):
        events += parser.feed(data[start:cut])
        start = cut
    events += parser.feed(data[start:])
    events += parser.flush()
    assert parser.pending == 0
    return events


def fields(events: list[SSEEvent]) -> list[tuple]:
    return [(e.data, e.event, e.id, e.retry, e.comments) for e in events]


def data_events(events: list[SSEEvent]) -> list[tuple]:
    """What a browser would dispatch: blocks that have data."""
    return [(e.event, e.data) for e in events if e.data is not None]


# --- basic fields -----------------------------------------------------------


def test_single_event_with_all_fields():
    raw = b"event: message\nid: 42\nretry: 1500\ndata: {\"a\":1}\n\n"
    [ev] = SSEParser().feed(raw)
    assert ev == SSEEvent(data='{"a":1}', event="message", id="42", retry=1500, raw=raw)


def test_multiline_data_is_joined_with_lf():
    [ev] = SSEParser().feed(b"data: first\ndata: second\ndata:\ndata:  indented\n\n")
    assert ev.data == "first\nsecond\n\n indented"


def test_only_one_leading_space_is_removed():
    [ev] = SSEParser().feed(b"data:no-space\nevent:  two\n\n")
    assert ev.data == "no-space"
    assert ev.event == " two"


def test_field_without_colon_has_empty_value():
    [ev] = SSEParser().feed(b"data\ndata\n\n")
    assert ev.data == "\n"
    [ev] = SSEParser().feed(b"event\n\n")
    assert ev.event == "" and ev.data is None


def test_value_may_contain_colons():
    [ev] = SSEParser().feed(b"data: http://example.com:8080/x\n\n")
    assert ev.data == "http://example.com:8080/x"


def test_unknown_fields_are_ignored_but_kept_in_raw():
    raw = b"foo: bar\nData: not-data\ndata: x\n\n"
    [ev] = SSEParser().feed(raw)
    assert ev.data == "x"
    assert ev.raw == raw


def test_last_event_and_id_win():
    [ev] = SSEParser().feed(b"event: a\nevent: b\nid: 1\nid: 2\ndata: x\n\n")
    assert (ev.event, ev.id) == ("b", "2")


def test_id_with_nul_is_ignored_and_empty_id_kept():
    [ev] = SSEParser().feed(b"id: a\x00b\ndata: x\n\n")
    assert ev.id is None
    [ev] = SSEParser().feed(b"id\ndata: x\n\n")
    assert ev.id == ""


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"retry: 10", 10),
        (b"retry:0", 0),
        (b"retry: 10ms", None),
        (b"retry: -1", None),
        (b"retry: 1.5", None),
        (b"retry:", None),
        (b"retry:  10", None),  # the second space is part of the value
        ("retry: \u0661\u0662".encode(), None),  # Arabic-Indic digits are not ASCII digits
    ],
)
def test_retry_only_when_all_ascii_digits(line, expected):
    [ev] = SSEParser().feed(line + b"\n\n")
    assert ev.retry == expected


def test_data_absent_versus_empty():
    [a, b] = SSEParser().feed(b"event: x\n\ndata:\n\n")
    assert a.data is None and a.event == "x"
    assert b.data == ""


def test_invalid_utf8_is_replaced():
    [ev] = SSEParser().feed(b"data: \xff\xfe ok\n\n")
    assert ev.data == "\ufffd\ufffd ok"


def test_non_ascii_data():
    raw = "data: héllo → 世界 😀\n\n".encode()
    [ev] = SSEParser().feed(raw)
    assert ev.data == "héllo → 世界 😀"


def test_other_unicode_line_separators_are_data():
    # U+2028, U+0085 and form feed are not SSE line endings.
    raw = "data: a\u2028b\u0085c\x0cd\n\n".encode()
    [ev] = SSEParser().feed(raw)
    assert ev.data == "a\u2028b\u0085c\x0cd"


# --- line endings -----------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_each_line_ending(eol):
    raw = b"event: e" + eol + b"data: 1" + eol + b"data: 2" + eol + eol
    [ev] = parse_all(raw)
    assert (ev.event, ev.data, ev.raw) == ("e", "1\n2", raw)


def test_mixed_line_endings():
    raw = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\rdata: e\n\n"
    events = parse_all(raw)
    assert [e.data for e in events] == ["a\nb\nc", "d", "e"]
    assert b"".join(e.raw for e in events) == raw


def test_cr_lf_split_across_chunks_is_one_line_ending():
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r\n\r") == [
        SSEEvent(data="a\nb", raw=b"data: a\r\ndata: b\r\n\r")
    ]
    # The LF completing the CRLF that ended the event starts the next raw,
    # and is not an empty line.
    [ev] = parser.feed(b"\ndata: c\n\n")
    assert ev.data == "c"
    assert ev.raw == b"\ndata: c\n\n"
    assert parser.flush() == []


def test_event_ending_in_cr_is_returned_without_waiting():
    parser = SSEParser()
    [ev] = parser.feed(b"data: x\r\r")
    assert ev.data == "x"
    assert parser.pending == 0


def test_cr_then_cr_in_next_chunk_is_a_blank_line():
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    [ev] = parser.feed(b"\r")
    assert ev.data == "x"


def test_lone_lf_after_cr_event_at_end_of_stream():
    parser = SSEParser()
    [ev] = parser.feed(b"data: x\r\r")
    assert parser.feed(b"\n") == []
    [tail] = parser.flush()
    assert tail == SSEEvent(raw=b"\n")


# --- comments and empty blocks --------------------------------------------------


def test_comment_only_block_is_its_own_event():
    events = SSEParser().feed(b": ping\n\ndata: x\n\n")
    assert events[0] == SSEEvent(comments=[" ping"], raw=b": ping\n\n")
    assert events[1].data == "x" and events[1].comments == []


def test_comments_stay_with_their_event():
    [ev] = SSEParser().feed(b":before\ndata: x\n: after\n\n")
    assert ev.comments == ["before", " after"]
    assert ev.data == "x"


def test_colon_only_line_is_an_empty_comment():
    [ev] = SSEParser().feed(b":\n\n")
    assert ev.comments == [""]


def test_extra_blank_lines_are_empty_events():
    events = SSEParser().feed(b"\n\ndata: x\n\n\n")
    assert [e.raw for e in events] == [b"\n", b"\n", b"data: x\n\n", b"\n"]
    assert [e.data for e in events] == [None, None, "x", None]


# --- BOM ------------------------------------------------------------------------


def test_bom_at_stream_start_is_skipped_but_kept_in_raw():
    raw = b"\xef\xbb\xbfdata: x\n\n"
    [ev] = parse_all(raw)
    assert ev.data == "x"
    assert ev.raw == raw


@pytest.mark.parametrize("cuts", [[1], [2], [1, 2], [3], [1, 4]])
def test_bom_split_across_chunks(cuts):
    raw = b"\xef\xbb\xbfdata: x\n\n"
    [ev] = parse_all(raw, cuts)
    assert (ev.data, ev.raw) == ("x", raw)


def test_bom_only_at_stream_start():
    [a, b] = parse_all(b"data: a\n\n\xef\xbb\xbfdata: b\n\n")
    assert a.data == "a"
    assert b.data is None  # the field is named "\ufeffdata"


def test_partial_bom_then_end_of_stream():
    parser = SSEParser()
    assert parser.feed(b"\xef\xbb") == []
    assert parser.pending == 2
    [ev] = parser.flush()
    assert ev.raw == b"\xef\xbb"


def test_bom_alone_then_blank_line():
    events = parse_all(b"\xef\xbb\xbf\n")
    assert events == [SSEEvent(raw=b"\xef\xbb\xbf\n")]


# --- flush ------------------------------------------------------------------------


def test_flush_returns_unterminated_event():
    parser = SSEParser()
    assert parser.feed(b"event: e\ndata: x\n") == []
    assert parser.pending == len(b"event: e\ndata: x\n")
    [ev] = parser.flush()
    assert (ev.event, ev.data, ev.raw) == ("e", "x", b"event: e\ndata: x\n")
    assert parser.pending == 0


def test_flush_parses_trailing_partial_line():
    parser = SSEParser()
    parser.feed(b"data: x\ndata: partial")
    [ev] = parser.flush()
    assert ev.data == "x\npartial"


def test_flush_on_empty_parser():
    assert SSEParser().flush() == []


def test_parser_is_reusable_after_flush():
    parser = SSEParser()
    parser.feed(b"data: a")
    parser.flush()
    [ev] = parser.feed(b"\xef\xbb\xbfdata: b\n\n")
    assert ev.data == "b"


def test_feed_empty_chunk():
    parser = SSEParser()
    assert parser.feed(b"") == []
    parser.feed(b"data: x\n")
    assert parser.feed(b"") == []
    assert parser.pending == 8


# --- size limit -----------------------------------------------------------------------


def test_max_event_size_on_complete_event():
    parser = SSEParser(max_event_size=16)
    with pytest.raises(SSEError):
        parser.feed(b"data: 0123456789abcdef\n\n")


def test_max_event_size_on_incomplete_event():
    parser = SSEParser(max_event_size=16)
    parser.feed(b"data: 0123")
    with pytest.raises(SSEError):
        parser.feed(b"456789abcdef")


def test_max_event_size_counts_each_event_separately():
    parser = SSEParser(max_event_size=16)
    events = parser.feed(b"data: 0123456\n\n" * 10)
    assert len(events) == 10


def test_event_of_exactly_max_size_is_accepted():
    raw = b"data: 01234567\n\n"
    [ev] = SSEParser(max_event_size=len(raw)).feed(raw)
    assert ev.raw == raw


def test_parser_refuses_input_after_failure():
    parser = SSEParser(max_event_size=8)
    with pytest.raises(SSEError):
        parser.feed(b"data: too long")
    with pytest.raises(SSEError):
        parser.feed(b"\n\n")
    with pytest.raises(SSEError):
        parser.flush()


def test_max_event_size_must_be_positive():
    with pytest.raises(ValueError):
        SSEParser(max_event_size=0)


# --- encode -------------------------------------------------------------------------


def test_encode_all_fields():
    ev = SSEEvent(data="a\nb", event="message", id="7", retry=100, comments=[" hi"])
    assert ev.encode() == b": hi\nevent: message\nid: 7\nretry: 100\ndata: a\ndata: b\n\n"


def test_encode_comment_only_and_empty():
    assert SSEEvent(comments=["keep-alive"]).encode() == b":keep-alive\n\n"
    assert SSEEvent().encode() == b"\n"
    assert SSEEvent(data="").encode() == b"data:\n\n"


def test_encode_preserves_leading_space_and_trailing_newline():
    ev = SSEEvent(data=" x\n")
    [back] = SSEParser().feed(ev.encode())
    assert back.data == " x\n"


def test_encode_splits_cr_in_data_into_lines():
    assert SSEEvent(data="a\r\nb\rc").encode() == b"data: a\ndata: b\ndata: c\n\n"


@pytest.mark.parametrize("field_name", ["event", "id"])
def test_encode_refuses_line_breaks_in_event_and_id(field_name):
    with pytest.raises(ValueError):
        SSEEvent(data="x", **{field_name: "a\ndata: injected"}).encode()


def test_encode_multiline_comment_stays_comment():
    ev = SSEEvent(comments=["a\ndata: injected"])
    [back] = SSEParser().feed(ev.encode())
    assert back.data is None
    assert back.comments == ["a", "data: injected"]


def test_encode_non_ascii():
    ev = SSEEvent(data="世界 😀")
    assert ev.encode() == "data: 世界 😀\n\n".encode()


# --- linear scanning ------------------------------------------------------------------


def test_many_small_chunks_of_one_large_event():
    payload = b"x" * 200_000
    parser = SSEParser()
    raw = b"data: " + payload + b"\n\n"
    events = []
    for i in range(0, len(raw), 7):
        events += parser.feed(raw[i : i + 7])
    assert [e.raw for e in events] == [raw]


def test_many_cr_terminated_lines_in_one_chunk():
    raw = b"data: x\r" * 50_000 + b"\r"
    [ev] = SSEParser().feed(raw)
    assert ev.data.count("\n") == 49_999


# --- properties -------------------------------------------------------------------------

_line_endings = st.sampled_from([b"\n", b"\r", b"\r\n"])
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=20,
)


@st.composite
def sse_streams(draw) -> bytes:
    """Streams built from realistic pieces plus arbitrary noise."""
    parts: list[bytes] = []
    if draw(st.booleans()):
        parts.append(b"\xef\xbb\xbf")
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["data", "event", "id", "retry", "comment", "blank", "other", "bare"]))
        eol = draw(_line_endings)
        value = draw(_text).encode()
        sep = draw(st.sampled_from([b":", b": ", b":  "]))
        if kind == "comment":
            parts.append(b":" + value + eol)
        elif kind == "blank":
            parts.append(eol)
        elif kind == "bare":
            parts.append(draw(st.sampled_from([b"data", b"event", b"id"])) + eol)
        elif kind == "retry":
            parts.append(b"retry" + sep + draw(st.sampled_from([b"10", b"x", value])) + eol)
        elif kind == "other":
            parts.append(value + eol)
        else:
            parts.append(kind.encode() + sep + value + eol)
        if draw(st.booleans()):
            parts.append(draw(_line_endings))
    if draw(st.booleans()):
        parts.append(draw(st.binary(max_size=10)))
    return b"".join(parts)


@st.composite
def stream_and_cuts(draw, streams=sse_streams()):
    data = draw(streams)
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=12))
    return data, cuts


@settings(max_examples=400)
@given(stream_and_cuts())
def test_raw_round_trip(case):
    data, cuts = case
    events = parse_all(data, cuts)
    assert b"".join(e.raw for e in events) == data


@settings(max_examples=400)
@given(stream_and_cuts(st.binary(max_size=64)))
def test_raw_round_trip_arbitrary_bytes(case):
    data, cuts = case
    events = parse_all(data, cuts)
    assert b"".join(e.raw for e in events) == data


@settings(max_examples=400)
@given(stream_and_cuts())
def test_chunking_does_not_change_dispatched_events(case):
    data, cuts = case
    # Splitting a CRLF may move its LF into the next event's raw, but the
    # events a client dispatches are always the same.
    assert data_events(parse_all(data, cuts)) == data_events(parse_all(data))
    assert [e.id for e in parse_all(data, cuts) if e.id is not None] == [
        e.id for e in parse_all(data) if e.id is not None
    ]


@settings(max_examples=400)
@given(stream_and_cuts())
def test_chunking_without_split_crlf_is_identical(case):
    data, cuts = case
    cuts = [c for c in cuts if not (0 < c < len(data) and data[c - 1 : c + 1] == b"\r\n")]
    assert fields(parse_all(data, cuts)) == fields(parse_all(data))
    assert [e.raw for e in parse_all(data, cuts)] == [e.raw for e in parse_all(data)]


@settings(max_examples=200)
@given(stream_and_cuts())
def test_every_byte_fed_at_a_time(case):
    data, _ = case
    events = parse_all(data, list(range(len(data))))
    assert b"".join(e.raw for e in events) == data
    assert data_events(events) == data_events(parse_all(data))


@settings(max_examples=300)
@given(
    data=st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)),
    event=st.one_of(st.none(), _text),
    event_id=st.one_of(st.none(), _text.filter(lambda s: "\0" not in s)),
    retry=st.one_of(st.none(), st.integers(0, 10**12)),
    comments=st.lists(_text, max_size=3),
)
def test_encode_then_parse(data, event, event_id, retry, comments):
    original = SSEEvent(data=data, event=event, id=event_id, retry=retry, comments=comments)
    encoded = original.encode()
    [parsed] = SSEParser().feed(encoded)
    expected_data = None if data is None else data.replace("\r\n", "\n").replace("\r", "\n")
    assert parsed.data == expected_data
    assert (parsed.event, parsed.id, parsed.retry, parsed.comments) == (event, event_id, retry, comments)
    assert parsed.raw == encoded
