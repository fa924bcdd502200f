"""Canonical request targets: the one spelling of a path that routing matches and the upstream gets.

A server decodes percent-encoding and may resolve dot segments (`/%6Dcp` is `/mcp` to Starlette,
`/public/../private` is `/private` to a normalising server), so a gateway that matched the raw
spelling could be routed around. Here a path is brought to its RFC 3986 section 6.2.2 normal form:
percent-encoded unreserved characters decoded (`%2e` included: `.` is unreserved), remaining hex
digits upper-cased, characters that may not appear raw in a path percent-encoded, repeated
slashes merged (many servers merge them before resolving dots) and dot segments removed. The
gateway then forwards that form, so any upstream, normalising or not, reads what was matched.

Spellings whose meaning depends on the upstream are refused instead (`NotCanonical`): an encoded
`/` or `\\`, a raw `\\`, NUL and other control characters, `%25` followed by hex digits (decoded
twice it is another character), a malformed escape, a segment such as `..;x` (some servers drop
`;` parameters before resolving dots), a fragment, and anything but an absolute path.

Pure functions: no mitmproxy, no policy."""

from __future__ import annotations

import functools
import re

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar without "%" (sub-delims, ":" and "@"), and "/": what may appear raw in a path.
_RAW_OK = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DOUBLE = re.compile(r"%25[0-9A-Fa-f]{2}")
# Bytes refused wherever they appear, decoded or raw: separators an upstream may split on, and controls.
_REFUSED_ENCODED = {0x2F: "an encoded '/' (%2F)", 0x5C: "an encoded '\\' (%5C)"}
# Already canonical: non-empty segments of raw path characters, no "%", and no segment that is
# "." or ".." (or those with ";" parameters).
_PLAIN = re.compile(r"(?:/(?!\.\.?(?:[/;]|$))[A-Za-z0-9\-._~!$&'()*+,;=:@]+)*/?")


class NotCanonical(ValueError):
    """The path has no spelling the gateway can vouch for; `str(e)` says why (safe to show)."""


def split_target(target: str) -> tuple[str, str]:
    """A request target as (path, "?query" or "")."""
    path, sep, query = target.partition("?")
    return path, sep + query


def canonical_target(target: str) -> str:
    """`canonical_path` of the path part; the query string is kept as sent (routing never reads it)."""
    path, query = split_target(target)
    return canonical_path(path) + query


def canonical_path(path: str) -> str:
    """The canonical form of an origin-form path (no query). Raises NotCanonical."""
    if path and _PLAIN.fullmatch(path):  # the common case, a single regex pass
        return path
    if path == "":
        return "/"  # an absolute-form target without a path (http://host:port) means "/"
    if not path.startswith("/"):
        raise NotCanonical("the request target must be an absolute path")
    raw = path.encode("utf-8", "surrogateescape")  # mitmproxy decodes the target that way
    return _remove_dot_segments(_normalise_bytes(raw))


def _normalise_bytes(raw: bytes) -> str:
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b == 0x25:  # "%"
            if i + 2 >= n:
                raise NotCanonical("a malformed percent-encoding in the path")
            h1, h2 = raw[i + 1], raw[i + 2]
            if h1 not in _HEX or h2 not in _HEX:
                raise NotCanonical("a malformed percent-encoding in the path")
            value = int(raw[i + 1:i + 3], 16)
            if value in _REFUSED_ENCODED:
                raise NotCanonical(f"the path holds {_REFUSED_ENCODED[value]}")
            if value < 0x20 or value == 0x7F:
                raise NotCanonical("the path holds an encoded control character (NUL, CR, LF, ...)")
            out.append(chr(value) if value in _UNRESERVED else f"%{value:02X}")
            i += 3
            continue
        if b == 0x5C:
            raise NotCanonical("the path holds a '\\'")
        if b < 0x20 or b == 0x7F:
            raise NotCanonical("the path holds a control character")
        if b == 0x23:
            raise NotCanonical("the request target holds a fragment ('#')")
        out.append(chr(b) if b in _RAW_OK else f"%{b:02X}")  # space, quotes, non-ASCII bytes, ...
        i += 1
    result = "".join(out)
    if _DOUBLE.search(result):  # checked on the result: "%25%32%65" becomes "%252e" once decoded
        raise NotCanonical("the path holds a double percent-encoding (%25 followed by hex digits)")
    return result


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path, after merging repeated slashes."""
    segments = path.split("/")[1:]
    kept: list[str] = []
    for seg in segments:
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            if kept:
                kept.pop()
            continue
        if seg.partition(";")[0] in (".", ".."):
            raise NotCanonical("the path holds a dot segment with parameters ('..;')")
        kept.append(seg)
    # A trailing "/", ".", or ".." leaves the result ending in "/" (as RFC 3986 does).
    trailing = bool(segments) and segments[-1] in ("", ".", "..")
    result = "/" + "/".join(kept)
    if trailing and kept:
        result += "/"
    return result


_AUTHORITY = re.compile(r"^(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::\d{1,5})?$")


def host_of(authority: str | None) -> str:
    """Hostname of a Host header value, lower-case, without port or IPv6 brackets; "" when the
    value is not a well-formed host[:port] (it is echoed into public URLs, so nothing else passes)."""
    m = _AUTHORITY.match((authority or "").strip().lower())
    return (m.group("v6") or m.group("name")) if m else ""


GATEWAY_SET_PREFIXES = ("x-consumer-", "x-credential-", "x-anonymous-", "x-authenticated-")  # in canonical form


def canonical_header_name(name: str | bytes) -> str:
    """A header name as a server that maps headers to variables reads it: case-folded, `_` as `-`."""
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    return name.casefold().replace("_", "-")


@functools.lru_cache(maxsize=1024)  # few distinct names; asked for every header of every request
def is_gateway_header(raw_name: bytes) -> bool:
    """Whether a header name is, or reads as, one the gateway sets (X-Consumer-*, ...)."""
    return canonical_header_name(raw_name).startswith(GATEWAY_SET_PREFIXES)
