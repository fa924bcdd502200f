"""The gateway's own secrets masked in answers (integrity/own_secrets.py): the forms looked for,
the streaming masker's hold-back at chunk boundaries, JSON validity of what it writes."""

from __future__ import annotations

import base64
import json
import random

from mcpgw.integrity.own_secrets import Masker, SecretSet, forms

SECRET = "upstream-injected-secret-7f3a9c"


def _run(secrets: SecretSet, pieces: list[bytes]) -> tuple[bytes, list[bytes], Masker]:
    m = Masker(secrets)
    out = [m.feed(p) for p in pieces]
    out.append(m.feed(b"", final=True))
    return b"".join(out), out, m


def test_forms_cover_escaped_url_and_basic_encodings():
    s = 'a"b\\c/d é:pass-word'
    f = forms(s)
    assert s.encode() in f
    assert json.dumps(s)[1:-1].encode() in f  # ASCII-escaped JSON
    assert json.dumps(s, ensure_ascii=False)[1:-1].encode() in f
    assert b"a%22b%5Cc%2Fd%20%C3%A9%3Apass-word" in f
    assert base64.b64encode(s.encode()) in f  # user:pass as a Basic credential
    token = base64.b64encode(b"robot:hunter22-long").decode()
    assert {b"robot:hunter22-long", b"hunter22-long", token.encode()} <= forms(token)


def test_short_values_are_not_secrets():
    assert SecretSet.of(["abc"]) is None
    assert SecretSet.of([]) is None


def test_whole_body_masked_same_length():
    secrets = SecretSet.of([SECRET])
    body = json.dumps({"error": f"bad header Authorization: Bearer {SECRET}", "again": SECRET}).encode()
    out, _, m = _run(secrets, [body])
    assert SECRET.encode() not in out and len(out) == len(body) and m.masked == 2
    assert json.loads(out)["again"] == "*" * len(SECRET)


def test_every_split_point_and_a_one_byte_drip():
    secrets = SecretSet.of([SECRET])
    body = b'{"echo":"' + SECRET.encode() + b'","n":1}'
    for cut in range(len(body) + 1):
        out, _, _ = _run(secrets, [body[:cut], body[cut:]])
        assert out == body.replace(SECRET.encode(), b"*" * len(SECRET)), cut
    out, pieces, m = _run(secrets, [body[i:i + 1] for i in range(len(body))])
    assert SECRET.encode() not in out and len(out) == len(body) and m.masked == 1
    # dripping gains the attacker nothing: not even the secret's first bytes go out unmasked
    emitted = b""
    for p in pieces:
        emitted += p
        assert SECRET.encode()[:3] not in emitted


def test_hold_back_is_bounded_and_nothing_after_an_event_end():
    secrets = SecretSet.of([SECRET])
    m = Masker(secrets)
    assert m.feed(b"data: {}\n\n") == b"data: {}\n\n"  # an SSE event goes on at once
    half = SECRET[:10].encode()
    assert m.feed(b"data: x " + half) == b"data: x "  # a possible start held back...
    assert len(m.held) <= secrets.longest - 1
    assert m.feed(b" no\n\n") == half + b" no\n\n"  # ...and released when it is not one


def test_random_chunkings_never_leak():
    rnd = random.Random(7)
    secrets = SecretSet.of([SECRET, "Basic " + base64.b64encode(b"svc:p4ssw0rd-x").decode()])
    text = json.dumps({"a": SECRET, "b": "svc:p4ssw0rd-x", "c": base64.b64encode(b"svc:p4ssw0rd-x").decode(),
                       "d": f"x{SECRET}{SECRET}y"}).encode()
    for _ in range(200):
        cuts = sorted(rnd.sample(range(1, len(text)), rnd.randint(1, 12)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        out, _, _ = _run(secrets, pieces)
        assert len(out) == len(text)
        for f in secrets.forms:
            assert f not in out
        json.loads(out)


def test_mask_after_an_escape_backslash_stays_valid_json():
    secret = "nSECRET-value-42"
    secrets = SecretSet.of([secret])
    body = json.dumps({"t": "line\n" + secret[1:] + " and " + secret}).encode()  # "\nSECRET-value-42" holds the form
    for cut in range(len(body) + 1):
        out, _, _ = _run(secrets, [body[:cut], body[cut:]])
        assert secret.encode() not in out
        json.loads(out)  # never a broken escape


def test_nothing_found_is_byte_for_byte():
    secrets = SecretSet.of([SECRET])
    body = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"upstream-injected"}]}}'
    out, _, m = _run(secrets, [body[:50], body[50:]])
    assert out == body and m.masked == 0


def test_stream_masks_what_the_inner_stream_emits_and_decodes_gzip():
    import gzip

    from mcpgw.integrity.own_secrets import MaskedStream

    secrets = SecretSet.of([SECRET])
    body = json.dumps({"echo": SECRET}).encode()
    inner_seen = []

    def inner(chunk):  # a stream callable already set (e.g. the SSE transforms): a list out
        inner_seen.append(chunk)
        return [chunk] if chunk else []

    stream = MaskedStream(inner, Masker(secrets), None)
    out = b"".join(b"".join(stream(c)) for c in (body[:12], body[12:], b""))
    assert out == body.replace(SECRET.encode(), b"*" * len(SECRET)) and inner_seen[-1] == b""
    packed = gzip.compress(body)
    stream = MaskedStream(True, Masker(secrets), "gzip")  # resp.stream True: raw chunks, compressed
    out = b"".join(b"".join(stream(c)) for c in (packed[:10], packed[10:], b""))
    assert out == body.replace(SECRET.encode(), b"*" * len(SECRET))


def test_a_failing_stream_ends_rather_than_relaying_unmasked():
    from mcpgw.integrity.own_secrets import MaskedStream

    stream = MaskedStream(True, Masker(SecretSet.of([SECRET])), "gzip")
    assert stream(b"not gzip at all " + SECRET.encode()) == []  # a decoding error: nothing relayed
    assert stream(SECRET.encode()) == [] and stream(b"") == []  # and nothing after it


def test_which_routes_hold_which_secrets(monkeypatch):
    from mcpgw.integrity.own_secrets import route_secrets
    from mcpgw.policy.models import Policy

    monkeypatch.setenv("OWN_SECRETS_PROVIDER_KEY", "provider-key-value-77")
    inject = {"mode": "inject", "allow_anonymous": True, "add": {"headers": ["Authorization:Bearer mcp-route-secret-91"]}}
    policy = Policy.model_validate({
        "services": {"mcp": {"url": "http://127.0.0.1:1/mcp"}, "llm": {"url": "http://127.0.0.1:1/v1"}},
        "routes": {
            "github": {"service": "mcp", "paths": ["/github"], "credentials": inject},
            "open": {"service": "mcp", "paths": ["/open"]},
            "llm": {"service": "llm", "paths": ["/llm"], "ai": {"route_type": "llm/v1/responses", "auth": {
                "header_name": "Authorization", "header_value": "Bearer {env://OWN_SECRETS_PROVIDER_KEY}"}}},
        }})
    found = route_secrets(policy)
    assert "open" not in found  # nothing to scan: the route costs nothing
    assert b"mcp-route-secret-91" in found["github"].forms and b"provider-key-value-77" not in found["github"].forms
    # the LLM route: its provider key, and the MCP routes' credentials it may put into MCP tools
    assert {b"provider-key-value-77", b"mcp-route-secret-91"} <= set(found["llm"].forms)
    assert route_secrets(policy) is found  # once per policy version
