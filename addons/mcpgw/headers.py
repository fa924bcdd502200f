"""Reading mitmproxy headers on the hot path.

`Headers.get` scans every field and lower-cases and decodes each name on each call; a governed
request goes through a dozen lookups. Here the fields are indexed once and the index is reused
until the headers change: mitmproxy's Headers never mutate `fields` in place, every change
assigns a new tuple, so the identity of that tuple says whether the index is still current. The
last few indexes are kept, not just one: a flow's later hooks read its request and response
headers in turn (the audit record, spans, session durations), and with one entry each turn would
index the other side again.

Semantics are mitmproxy's: names match case-insensitively (ASCII), values are decoded as UTF-8
with surrogateescape, and `header` folds repeated headers with ", ". `remove` and `put` change
headers as `del headers[name]` and `headers[name] = value` do, and carry the index over to the
new fields instead of leaving the next read to rebuild it."""

from __future__ import annotations

from collections.abc import Mapping

from mitmproxy import http

Index = dict[bytes, list[str]]

# (fields, index) of the headers read last, most recent first. Holding the tuples keeps their
# identities unique. Replaced whole, never changed in place: a thread reading it sees one version.
KEPT = 4
_recent: tuple[tuple[tuple, Index], ...] = ()


def index(headers: http.Headers) -> Index:
    fields = headers.fields
    recent = _recent
    for kept_fields, kept in recent:
        if kept_fields is fields:
            return kept
    built: Index = {}
    for raw_name, raw_value in fields:
        value = raw_value.decode("utf-8", "surrogateescape")
        name = raw_name.lower()
        if (found := built.get(name)) is None:
            built[name] = [value]
        else:
            found.append(value)
    _remember(fields, built)
    return built


def _remember(fields: tuple, built: Index) -> None:
    global _recent
    _recent = ((fields, built), *_recent[:KEPT - 1])


_KEYS: dict[str, bytes] = {}  # name -> lookup key; the names asked for are a few constants


def _key(name: str) -> bytes:
    key = _KEYS.get(name)
    if key is None:
        key = name.encode("utf-8", "surrogateescape").lower()
        if len(_KEYS) < 1024:
            _KEYS[name] = key
    return key


def header_values(headers: http.Headers, name: str) -> list[str]:
    """Every value of header `name`, in order (a new list)."""
    return list(index(headers).get(_key(name), ()))


def header(headers: http.Headers, name: str, default: str | None = None) -> str | None:
    """The value of header `name`, repeated headers folded with ", " (as mitmproxy does)."""
    found = index(headers).get(_key(name))
    if not found:
        return default
    return found[0] if len(found) == 1 else ", ".join(found)


def has_header(headers: http.Headers, name: str) -> bool:
    return _key(name) in index(headers)


def host_header(request: http.Request) -> str | None:
    """`request.host_header`, read through the index."""
    if request.is_http2 or request.is_http3:
        return request.authority or header(request.headers, "host")
    return header(request.headers, "host")


def _install(headers: http.Headers, fields: tuple[tuple[bytes, bytes], ...], new_index: Index) -> None:
    headers.fields = fields
    _remember(fields, new_index)


def remove(headers: http.Headers, *names: str) -> bool:
    """Remove every field named one of `names` (any case). Whether there was one."""
    keys = {_key(n) for n in names}
    current = index(headers)
    if keys.isdisjoint(current):
        return False
    kept = tuple(f for f in headers.fields if f[0].lower() not in keys)
    _install(headers, kept, {k: v for k, v in current.items() if k not in keys})
    return True


def put(headers: http.Headers, name: str, value: str) -> None:
    """Set header `name` to the one `value`: in place of its first field (the others go), or
    appended when it is new."""
    key, raw = _key(name), value.encode("utf-8", "surrogateescape")
    current = index(headers)
    if key not in current:
        fields = (*headers.fields, (name.encode("utf-8", "surrogateescape"), raw))
    else:
        fields, placed = [], False
        for field in headers.fields:
            if field[0].lower() != key:
                fields.append(field)
            elif not placed:
                fields.append((field[0], raw))
                placed = True
        fields = tuple(fields)
    _install(headers, fields, {**current, key: [value]})


def replace_all(headers: http.Headers, values: Mapping[str, str], drop: tuple[str, ...] = ()) -> None:
    """Remove every field named in `values` or `drop` (any case), then append one field per entry
    of `values`, in order: one new tuple of fields, however many names change."""
    current = index(headers)
    gone = [k for k in map(_key, (*values, *drop)) if k in current]  # (present now: their fields go)
    new_index = dict(current)
    fields = headers.fields
    if gone:
        for key in gone:
            new_index.pop(key, None)
        gone_keys = frozenset(gone)
        fields = tuple([f for f in fields if f[0].lower() not in gone_keys])
    added = []
    for name, value in values.items():
        new_index[_key(name)] = [value]
        added.append((name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape")))
    _install(headers, fields + tuple(added), new_index)


def reframe_as_chunked(flow: http.HTTPFlow) -> None:
    """A response whose body the gateway re-emits with another length: Content-Length dropped,
    and for an HTTP/1.1 client chunked framing (mitmproxy adds none: without it the client would
    read to the end of the connection, which then cannot be reused). An HTTP/1.0 client knows no
    chunks (it reads to the close); an HTTP/2 client frames by stream."""
    resp = flow.response
    assert resp is not None
    remove(resp.headers, "content-length")
    if flow.request.http_version == "HTTP/1.1" and not has_header(resp.headers, "transfer-encoding"):
        put(resp.headers, "transfer-encoding", "chunked")


def set_body(request: http.Request, body: bytes) -> None:
    """request.content = body, as mitmproxy sets it, through the header index: mitmproxy's setter
    scans and re-encodes the headers twice (17 us against 4 for a dozen headers). An encoded
    body is left to mitmproxy's setter, which encodes it."""
    headers = request.headers
    if has_header(headers, "content-encoding"):
        request.content = body
        return
    request.raw_content = body
    if not has_header(headers, "transfer-encoding"):
        put(headers, "content-length", str(len(body)))
