"""A large JSON answer on a route with secret scanning is relayed while it is screened
(protocol/json_relay.py, set up by streaming.prepare_response): clean bytes go out as they come,
and whatever the held path would change reaches the client changed, or the answer is ended
unparseable; never the bytes the judge would remove."""

from __future__ import annotations

import json

import pytest
from mitmproxy import http

from mcpgw import streaming
from mcpgw.integrity import leaks
from mcpgw.integrity.settings import SecretSettings
from mcpgw.protocol import json_relay
from mcpgw.protocol.messages import transform_json_body

from .integrity_flows import flow_for
from .test_integrity_secrets import AWS, GHP, SAMPLES, call, snapshot

CHUNK = 65535  # what mitmproxy reads at a time
PROSE = "2026-12-01 12:00:00 INFO task-42 finished: wrote 1200 rows to the reports table in 3.2 s\n"


def big_answer(text_tail: str = "", size: int = 300_000, compact: bool = False) -> bytes:
    text = (PROSE * (size // len(PROSE) + 1))[:size] + text_tail
    message = {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": text}]}}
    return json.dumps(message, separators=(",", ":") if compact else None, ensure_ascii=not compact).encode()


def answer_headers(body: bytes) -> http.Response:
    """The upstream's answer at response headers: its body still to come."""
    resp = http.Response.make(200, b"", {"content-type": "application/json"})
    resp.headers["content-length"] = str(len(body))
    return resp


def relayed(tmp_path, body: bytes, secrets: dict | None = None, chunk: int = CHUNK, integrity: dict | None = None):
    """(flow, ctx, what the client got, how many bytes went out before the last chunk came)."""
    ctx, flow, refused = flow_for(snapshot(secrets or {}, tmp_path), call())
    assert refused is None
    flow.response = answer_headers(body)
    assert streaming.prepare_response(ctx, flow) is None
    stream = flow.response.stream
    out, early = [], 0
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    for i, piece in enumerate(pieces):
        out += stream(piece) if callable(stream) else [piece]
        if i == len(pieces) - 2:
            early = sum(map(len, out))
    out += stream(b"") if callable(stream) else []
    return flow, ctx, b"".join(out), early


def held(tmp_path, body: bytes, secrets: dict | None = None) -> bytes:
    """What the held path sends for the same body."""
    ctx, _, _ = flow_for(snapshot(secrets or {}, tmp_path), call())
    new = transform_json_body(body, ctx.server_transforms)
    return body if new is None else new


def test_a_clean_answer_goes_out_as_it_comes_and_unchanged(tmp_path):
    body = big_answer()
    flow, _, got, early = relayed(tmp_path, body)
    assert isinstance(flow.response.stream, json_relay.JsonRelay)
    assert got == body
    # before the last chunk came, all had gone out but the chunk held back as the tail (whole chunks)
    assert early == len(body) - len(body) % CHUNK - CHUNK


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("chunk", [CHUNK, 1000, 7])
def test_a_token_late_in_the_answer_is_redacted_within_the_declared_length(tmp_path, compact, chunk):
    body = big_answer(f" and then {GHP} at the end", compact=compact)
    _, ctx, got, _ = relayed(tmp_path, body, chunk=chunk)
    assert len(got) == len(body) and GHP.encode() not in got
    assert json.loads(got) == json.loads(held(tmp_path, body))
    assert ctx.audit_fields["findings"][0]["action"] == "redacted"


def test_a_token_split_between_two_chunks_is_found(tmp_path):
    body = big_answer(f" {GHP} ")
    at = body.index(GHP.encode()) + 10
    ctx, flow, _ = flow_for(snapshot({}, tmp_path), call())
    flow.response = answer_headers(body)
    streaming.prepare_response(ctx, flow)
    got = b"".join([*flow.response.stream(body[:at]), *flow.response.stream(body[at:]), *flow.response.stream(b"")])
    assert GHP.encode() not in got and json.loads(got) == json.loads(held(tmp_path, body))


@pytest.mark.parametrize("detector", sorted(SAMPLES))
def test_every_detector_is_caught_before_the_token_goes_out(tmp_path, detector):
    sample = SAMPLES[detector][0]
    body = big_answer(f" {sample} ", compact=True)
    _, _, got, _ = relayed(tmp_path, body, chunk=500)
    decoded = json.loads(body)["result"]["content"][0]["text"]
    assert sample in decoded
    assert sample.encode() not in got and json.dumps(sample)[1:-1].encode() not in got
    try:
        out = json.loads(got)
    except ValueError:
        return  # ended unparseable: allowed, but then nothing of the token either (above)
    # what the held path says, but where a mask would not fit: `[###]` as long as the token
    assert leaks._unmasked(out) == leaks._unmasked(json.loads(held(tmp_path, body)))


def test_an_escaped_token_in_a_loose_answer_ends_it_unparseable(tmp_path):
    # `\u0070` spells the `p` of ghp_: only the parsed path can redact it, and what it makes of the
    # answer does not begin with the bytes already relayed (the upstream's spacing differs)
    escaped = GHP.replace("p", "\\u0070", 1)
    body = big_answer().replace(b'"}]}}', b" " + escaped.encode() + b'"}]}}')
    assert GHP in json.loads(body)["result"]["content"][0]["text"]
    _, _, got, _ = relayed(tmp_path, body)
    assert len(got) == len(body) and got.endswith(json_relay.UNPARSEABLE)
    with pytest.raises(ValueError):
        json.loads(got)
    assert GHP.encode() not in got and escaped.encode() not in got


def test_a_mask_longer_than_its_token_is_made_as_long_where_nothing_can_be_spared(tmp_path):
    # a compact answer has no spacing to spare, and the AWS key's mask is longer than the key
    body = big_answer(f" {AWS} ", compact=True)
    _, ctx, got, _ = relayed(tmp_path, body)
    assert len(got) == len(body) and AWS.encode() not in got
    text = json.loads(got)["result"]["content"][0]["text"]
    assert text.endswith(" [" + "#" * (len(AWS) - 2) + "] ")
    assert ctx.audit_fields["findings"][0]["detectors"] == ["aws_access_key"]


def test_the_fitted_redaction_is_checked_against_the_held_path(tmp_path):
    ctx, _, _ = flow_for(snapshot({}, tmp_path), call())
    fit = next(t.raw_fit for t in ctx.server_transforms if hasattr(t, "raw_fit"))
    plain = big_answer(f" {AWS} ")
    assert fit(plain, held(tmp_path, plain)) is not None
    # an escaped key: the held path decodes and redacts it, the raw text does not spell it: the
    # fitted body would still say the key, so it is refused (and a relayed answer is cut)
    spelt = AWS.replace("K", "\\u004b", 1).encode()  # raw JSON text: a JSON escape, not a backslash
    escaped = big_answer(f" {AWS} and SPELT ").replace(b"SPELT", spelt)
    assert json.loads(escaped)["result"]["content"][0]["text"].endswith(f" {AWS} and {AWS} ")
    judged = held(tmp_path, escaped)
    assert AWS not in json.loads(judged)["result"]["content"][0]["text"]
    assert fit(escaped, judged) is None


def test_a_token_in_the_first_bytes_is_judged_before_anything_goes_out(tmp_path):
    body = big_answer().replace(b'"text": "', f'"text": "{AWS} '.encode(), 1)
    _, _, got, early = relayed(tmp_path, body)
    assert early == 0 and AWS.encode() not in got and len(got) == len(body)
    assert json.loads(got) == json.loads(held(tmp_path, body))  # the shorter judged body, padded with spaces


@pytest.mark.parametrize("case", ["small", "encoded", "block", "rules", "head"])
def test_held_as_before_where_relaying_is_not_safe_or_not_worth_it(tmp_path, case):
    secrets = {"results": "block"} if case == "block" else {"rules": [{"name": "x", "regex": "x{3}"}]} if case == "rules" else {}
    body = big_answer(size=json_relay.SMALLEST // 2 if case == "small" else 300_000)
    ctx, flow, _ = flow_for(snapshot(secrets, tmp_path), call())
    if case == "head":
        flow.request.method = "HEAD"
    flow.response = answer_headers(body)
    if case == "encoded":
        flow.response.headers["content-encoding"] = "gzip"
    streaming.prepare_response(ctx, flow)
    assert flow.response.stream is False


def test_the_relayed_screen_reports_every_token_near_where_it_begins():
    scanner = leaks.LeakScanner(SecretSettings(), ("a-gateway-secret-value",))
    screen = scanner.stream_screen()
    assert screen is not None
    for detector, samples in SAMPLES.items():
        for sample in samples:
            screening = screen.open()
            text = ("x " * 300 + sample + " tail").encode()
            start = text.index(sample.encode())
            # fed a byte at a time: the first byte at which the screen reports it
            reported = next(i for i in range(len(text)) if screening.feed(text[i:i + 1]))
            assert reported - start <= leaks.RELAY_REACH < json_relay.TAIL, (detector, sample)
            screening.close()
    assert not screen.open().feed(big_answer())


def test_no_relayed_screen_for_user_rules_or_an_overlong_secret():
    assert leaks.LeakScanner(SecretSettings.model_validate({"rules": [{"name": "x", "regex": "x{3}"}]}), ()).stream_screen() is None
    assert leaks.LeakScanner(SecretSettings(), ("s" * (leaks.RELAY_REACH + 1),)).stream_screen() is None
