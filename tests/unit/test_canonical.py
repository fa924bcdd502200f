"""canonical.py: the one spelling of a request path that routing matches and the upstream receives.

The properties are stated against two upstreams an attacker may face: one that only decodes
percent-encoding (Starlette), and one that also merges slashes and removes dot segments (nginx
and most normalising front ends). Whatever a path is, if the gateway accepts it, both upstreams
read the same thing, and that thing is what the gateway matched."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import example, given, settings, strategies as st

from mcpgw.canonical import NotCanonical, canonical_path, canonical_target


def rfc_remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 section 5.2.4, literally (an independent reference for the implementation)."""
    inp, out = path, b""
    while inp:
        if inp.startswith(b"../"):
            inp = inp[3:]
        elif inp.startswith(b"./"):
            inp = inp[2:]
        elif inp.startswith(b"/./"):
            inp = b"/" + inp[3:]
        elif inp == b"/.":
            inp = b"/"
        elif inp.startswith(b"/../") or inp == b"/..":
            inp = b"/" + inp[4:]
            out = out[:out.rfind(b"/")] if b"/" in out else b""
        elif inp in (b".", b".."):
            inp = b""
        else:
            end = inp.find(b"/", 1 if inp.startswith(b"/") else 0)
            end = len(inp) if end < 0 else end
            out, inp = out + inp[:end], inp[end:]
    return out


def decoding_upstream(path: str) -> bytes:
    return unquote_to_bytes(path)


def normalising_upstream(path: str) -> bytes:
    return rfc_remove_dot_segments(re.sub(rb"/+", b"/", unquote_to_bytes(path)))


# -- examples -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, expected", [
    ("/mcp", "/mcp"),
    ("/", "/"),
    ("", "/"),
    ("/github-mcp/x/y", "/github-mcp/x/y"),
    ("/mcp/", "/mcp/"),
    ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource/mcp"),
    ("/%6Dcp", "/mcp"),  # the bypass: Starlette reads it as /mcp
    ("/%6dcp", "/mcp"),
    ("/%7e%41%2D%5f%2E", "/~A-_."),  # unreserved characters are decoded
    ("/a%c3%a9", "/a%C3%A9"),  # other escapes stay, hex upper-cased
    ("/a%3bb", "/a%3Bb"),
    ("/public/../private/x", "/private/x"),
    ("/public/%2e%2e/private/x", "/private/x"),
    ("/public/.%2E/private/x", "/private/x"),
    ("/public/./x", "/public/x"),
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/..", "/"),
    ("/../../mcp", "/mcp"),
    ("/a//b", "/a/b"),
    ("//mcp", "/mcp"),
    ("/public//../private", "/private"),  # slashes merged first, as merging servers do
    ("/.well-known/oauth-protected-resource/x/%2e%2e/mcp", "/.well-known/oauth-protected-resource/mcp"),
    ("/a b", "/a%20b"),
    ("/é", "/%C3%A9"),
    ("/mcp;v=1", "/mcp;v=1"),
    ("/...", "/..."),
    ("/%25zz", "/%25zz"),  # an encoded "%" that decodes to no escape
])
def test_canonical_forms(path, expected):
    assert canonical_path(path) == expected


@pytest.mark.parametrize("path, reason", [
    ("/public/..%2fprivate/x", "encoded '/'"),  # the gateway-mode bypass
    ("/mcp%2Fx", "encoded '/'"),
    ("/public/..%5cprivate", "encoded '\\'"),
    ("/public/..\\private", "'\\'"),
    ("/mcp%00", "control character"),
    ("/mcp%0a", "control character"),
    ("/mcp\x00", "control character"),
    ("/mcp\t", "control character"),
    ("/%252e%252e/mcp", "double percent-encoding"),
    ("/%25%32%65", "double percent-encoding"),  # becomes %252e once the unreserved escapes are decoded
    ("/a%2", "malformed"),
    ("/a%", "malformed"),
    ("/a%zz", "malformed"),
    ("/..;/private", "dot segment"),
    ("/public/%2e%2e;x/private", "dot segment"),
    ("/mcp#x", "fragment"),
    ("*", "absolute path"),
    ("mcp", "absolute path"),
])
def test_refused_spellings(path, reason):
    with pytest.raises(NotCanonical, match=re.escape(reason)):
        canonical_path(path)


def test_target_keeps_the_query_as_sent():
    assert canonical_target("/%6Dcp?session_id=a%2Fb&x=..") == "/mcp?session_id=a%2Fb&x=.."
    assert canonical_target("/mcp") == "/mcp"
    with pytest.raises(NotCanonical):
        canonical_target("/a%2Fb?x")


# -- properties -----------------------------------------------------------------------------------

PIECES = ["a", "b", "mcp", "public", "private", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%6D", "%6dcp", "%7e",
          "%41", "%2F", "%2f", "%5C", "\\", "%00", "%25", "%252e", "%", "%zz", "é", "", ";", ";x", "..;", " ", "~",
          "%C3%A9", "%3b", "x.y", "...", "#", "%2", "%25%32%65"]
segments = st.lists(st.sampled_from(PIECES) | st.text(alphabet="ab.%2eE/;", max_size=6), max_size=8)
paths = segments.map(lambda s: "/" + "/".join(s))


def accepted(path: str) -> str | None:
    try:
        return canonical_path(path)
    except NotCanonical:
        return None


@settings(max_examples=3000, deadline=None)
@given(paths)
@example("/public/%2e%2e/private")
@example("/a/b/%2e%2e/%2e%2e/../c/")
def test_both_upstreams_read_what_the_gateway_matched(path):
    canonical = accepted(path)
    if canonical is None:
        return
    # A decoding upstream and a normalising one read the canonical form alike...
    assert decoding_upstream(canonical) == normalising_upstream(canonical)
    # ...and it means to a normalising upstream what the original spelling meant.
    assert normalising_upstream(canonical) == normalising_upstream(path)


@settings(max_examples=3000, deadline=None)
@given(paths)
def test_canonical_form_is_a_plain_fixed_point(path):
    canonical = accepted(path)
    if canonical is None:
        return
    assert canonical_path(canonical) == canonical  # idempotent
    assert canonical.isascii() and canonical.startswith("/") and "//" not in canonical
    assert not any(seg in (".", "..") for seg in canonical.split("/"))
    assert not re.search(r"%(?![0-9A-F]{2})", canonical)  # every "%" starts an upper-case escape
    decoded = decoding_upstream(canonical)
    assert unquote_to_bytes(decoded) == decoded  # decoding twice changes nothing


@settings(max_examples=2000, deadline=None)
@given(segments, st.sampled_from(["%2F", "%2f", "%5C", "%5c", "\\", "%00", "%0D", "%0A"]), segments)
def test_separators_and_controls_are_refused_wherever_they_are(before, bad, after):
    with pytest.raises(NotCanonical):
        canonical_path("/" + "/".join(before) + bad + "/".join(after))


@settings(max_examples=2000, deadline=None)
@given(paths)
def test_a_route_prefix_holds_for_the_normalising_upstream(path):
    canonical = accepted(path)
    if canonical is None or not (canonical == "/public" or canonical.startswith("/public/")):
        return
    seen = normalising_upstream(path)
    assert seen == b"/public" or seen.startswith(b"/public/")


@settings(max_examples=3000, deadline=None)
@given(paths | st.text(alphabet="/.;a%2e", max_size=12).map(lambda s: "/" + s))
@example("/.well-known/oauth-protected-resource/mcp")
@example("/..;x")
def test_the_fast_path_agrees_with_the_full_normalisation(path):
    from mcpgw import canonical

    def full(p: str) -> str:
        return canonical._remove_dot_segments(canonical._normalise_bytes(p.encode("utf-8", "surrogateescape")))

    try:
        expected = full(path)
    except NotCanonical:
        with pytest.raises(NotCanonical):
            canonical_path(path)
        return
    assert canonical_path(path) == expected
