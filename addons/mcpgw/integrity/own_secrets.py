"""The gateway's own secrets never reach a client, on every route (docs/integrity.md).

A route that sends its upstream something the client did not (an injected credential, a token
exchange result, an LLM provider key, a REST tool's credential) holds a secret an upstream can
echo back: an error message quoting the Authorization header it got hands the organisation's
token to the caller. Every answer of such a route is scanned, as bytes, for those exact values
and their common encodings (JSON-escaped, URL-encoded, base64 of `user:pass` and the decoded
`user:pass` of a Basic credential), and each occurrence is overwritten with a same-length run
of `*`, whatever `integrity.secrets` says and on routes without `integrity:` at all.

Why same-length: the body keeps its Content-Length (nothing need be buffered or re-framed), and
`*` needs no escaping in JSON, URLs, base64 or SSE, so a masked JSON string stays a valid one.
The one case where it would not: a match right after an odd run of backslashes (the secret
starting where a JSON escape's letter would be); the run then starts with a backslash, which
makes the pair an escaped backslash.

Streams stay streams: the masker works on what the response's stream chain emits (SSE events,
decoded, as the message layer re-emits them; raw chunks otherwise) and holds back only a tail
that is a proper prefix of some secret form (at most the longest form - 1 bytes; none after an
SSE event's blank line, which no secret contains). A compressed raw body is decoded as it
passes and sent uncompressed and chunked (Content-Encoding and Content-Length dropped).

Cost: the route's forms are built once per policy version (PerPolicy); a route holding none
gets nothing (one dict lookup per response). The scan is one `bytes.find` per form per chunk."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import weakref
from urllib.parse import quote

from mitmproxy import http

from .. import context, redaction
from ..governance import annotate
from ..headers import header, reframe_as_chunked
from ..identity import exchange
from ..policy.derived import PerPolicy
from ..protocol.messages import _Decoder, can_decode
from ..responses import json_response
from . import record

log = logging.getLogger("mcpgw.integrity")
_STAR = 0x2A
_BACKSLASH = 0x5C


def forms(secret: str) -> set[bytes]:
    """A secret as an upstream may write it back."""
    out = {secret, json.dumps(secret, ensure_ascii=False)[1:-1], json.dumps(secret)[1:-1], quote(secret, safe=""),
           quote(secret, safe="/:@")}
    if ":" in secret:  # user:pass: as a Basic credential encodes it
        out.add(base64.b64encode(secret.encode()).decode())
    try:  # a Basic credential's token: the user:pass it encodes, and the password alone
        decoded = base64.b64decode(secret, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        decoded = ""
    if ":" in decoded and decoded.isprintable():
        out.add(decoded)
        password = decoded.split(":", 1)[1]
        if len(password) >= redaction.MIN_SECRET_LENGTH:
            out.add(password)
    return {f.encode("utf-8", "surrogatepass") for f in out if len(f) >= redaction.MIN_SECRET_LENGTH}


class SecretSet:
    """A route's secret forms, longest first, and what the hold-back test needs of them."""

    __slots__ = ("forms", "longest", "_by_first")

    def __init__(self, forms: tuple[bytes, ...]):
        self.forms = forms
        self.longest = len(forms[0])
        by_first: dict[bytes, list[bytes]] = {}
        for f in forms:
            by_first.setdefault(f[:1], []).append(f)
        self._by_first = {k: tuple(v) for k, v in by_first.items()}

    @classmethod
    def of(cls, values) -> "SecretSet | None":
        found = set().union(*(forms(v) for v in values if v)) if values else set()
        return cls(tuple(sorted(found, key=len, reverse=True))) if found else None

    def with_values(self, values) -> "SecretSet":
        extra = SecretSet.of(values)
        return self if extra is None else SecretSet(tuple(sorted(set(self.forms) | set(extra.forms), key=len,
                                                                  reverse=True)))

    def spans(self, data: bytes | bytearray) -> list[tuple[int, int]]:
        out = []
        for f in self.forms:
            i = data.find(f)
            while i >= 0:
                out.append((i, i + len(f)))
                i = data.find(f, i + 1)
        return out

    def held(self, data: bytes | bytearray) -> int:
        """How many trailing bytes may begin a form (at most longest - 1): what a chunk boundary
        makes us hold. One `find` per distinct first byte in the common case of none."""
        n = len(data)
        low, best = max(0, n - (self.longest - 1)), 0
        for first, group in self._by_first.items():
            i = data.find(first, low)
            while i >= 0 and n - i > best:  # the earliest start that may begin a form holds most
                tail = bytes(data[i:])
                if any(f.startswith(tail) for f in group):
                    best = n - i
                    break
                i = data.find(first, i + 1)
        return best


def _route_secrets(policy) -> dict[str, SecretSet]:
    """Per route: every secret value its settings and its service hold (what it sends upstream the
    client did not); a REST tools listener's also those of the routes whose tools it serves, whose
    credentials its calls carry (docs/rest-tools.md); an LLM route's also every injected MCP route
    credential, which the gateway may put into a Responses request's MCP tools for the provider."""
    values = {name: set(redaction._collect_policy_secrets(route))  # (not the per-policy cache: keyed by policy)
              | set(redaction._collect_policy_secrets(policy.services.get(route.service)) if route.service else ())
              for name, route in policy.routes.items()}
    injecting = set().union(*(values[n] for n, r in policy.routes.items()
                               if r.credentials is not None and r.credentials.mode == "inject"))
    for name, route in policy.routes.items():
        if route.ai is not None:  # MCP tools in a Responses request carry those routes' credentials (ai/mcp_tools.py)
            values[name] |= injecting
        rest = getattr(route, "rest_tools", None)
        tag = rest.server.tag if rest is not None and rest.mode == "listener" and rest.server is not None else None
        if tag:
            for other, r in policy.routes.items():
                if r.rest_tools is not None and tag in r.rest_tools.tags:
                    values[name] |= values[other]
    return {name: found for name, v in values.items() if (found := SecretSet.of(v)) is not None}


route_secrets = PerPolicy(_route_secrets)

# secrets a flow obtained at run time (a token exchange's result), by flow
_dynamic: "weakref.WeakKeyDictionary[http.HTTPFlow, tuple[str, ...]]" = weakref.WeakKeyDictionary()


def note_exchanged(ctx, flow: http.HTTPFlow) -> None:
    """Request phase, after exchange.exchange_token: the exchanged token is the gateway's."""
    if ctx.match is None or ctx.access_token is None or ctx.match.name not in exchange._routes(ctx.snapshot.policy):
        return None
    value = flow.request.headers.get("authorization", "")
    token = value.split(" ", 1)[1].strip() if " " in value else value
    if token and token != ctx.access_token:
        _dynamic[flow] = (token,)  # (the token alone: its scheme is no secret, and stays readable)
    return None


def secrets_for(ctx, flow: http.HTTPFlow) -> SecretSet | None:
    if ctx.match is None:
        return None
    found = route_secrets(ctx.snapshot.policy).get(ctx.match.name)
    dynamic = _dynamic.get(flow)
    if dynamic:
        found = found.with_values(dynamic) if found is not None else SecretSet.of(dynamic)
    return found


class Masker:
    """Masks a byte stream that arrives in pieces, holding back only a possible secret prefix."""

    __slots__ = ("secrets", "held", "carry", "backslashes", "masked", "_flow", "__weakref__")

    def __init__(self, secrets: SecretSet, flow: http.HTTPFlow | None = None):
        self.secrets = secrets
        self.held = b""  # unmasked: a form may complete with the next piece
        self.carry = 0  # bytes at the start of `held` a match already emitted in part still covers
        self.backslashes = 0  # trailing backslashes of what was emitted (JSON escape parity)
        self.masked = 0
        self._flow = weakref.ref(flow) if flow is not None else None

    def feed(self, data: bytes, final: bool = False) -> bytes:
        buf = self.held + data
        if not buf:
            return b""
        cut = len(buf) if final else len(buf) - self.secrets.held(buf)
        out = bytearray(buf[:cut])
        spans = self.secrets.spans(buf)
        if self.carry:
            out[:min(self.carry, cut)] = b"*" * min(self.carry, cut)
        reach, fresh = 0, 0
        for start, end in sorted(spans):
            if start >= cut:
                continue  # wholly in the held tail: found again, whole, with the next piece
            reach = max(reach, end)
            stop = min(end, cut)
            out[start:stop] = b"*" * (stop - start)
            if self._escaped(buf, start):
                out[start] = _BACKSLASH
            fresh += 1
        self.carry = max(reach - cut, self.carry - cut, 0)
        self.held = buf[cut:]
        if out:
            run = len(out) - len(out.rstrip(b"\\"))
            self.backslashes = run if run < len(out) else self.backslashes + run
        if fresh:
            self._note(fresh)
        return bytes(out)

    def _escaped(self, buf: bytes, start: int) -> bool:
        """Whether the byte at `start` follows an odd run of backslashes (it is a JSON escape's letter)."""
        i = start
        while i > 0 and buf[i - 1] == _BACKSLASH:
            i -= 1
        run = start - i + (self.backslashes if i == 0 else 0)
        return run % 2 == 1

    def _note(self, count: int) -> None:
        first = self.masked == 0
        self.masked += count
        flow = self._flow() if self._flow is not None else None
        if flow is None:
            return
        ctx = context.get(flow)
        if ctx is None:
            return
        if first:
            record(ctx, {"check": "integrity.own_secrets", "direction": "result", "detectors": ["gateway_secret"],
                         "action": "masked", "count": 0})
            annotate.note(flow, "integrity: the gateway's own secret echoed by the upstream: MASKED")
            annotate.mark(flow, denied=False, would_deny=True)
        for f in reversed(ctx.audit_fields.get("findings", [])):
            if f.get("check") == "integrity.own_secrets":
                f["count"] = self.masked
                break


class MaskedStream:
    """resp.stream: what the chain set before emits (or the raw chunks), decoded if needed, masked."""

    __slots__ = ("inner", "masker", "decoder", "failed", "__weakref__")

    def __init__(self, inner, masker: Masker, encoding: str | None):
        self.inner = inner if callable(inner) else None
        self.masker = masker
        self.decoder = _Decoder(encoding) if encoding else None
        self.failed = False

    def __call__(self, chunk: bytes) -> list[bytes]:
        if self.failed:
            return []
        try:
            pieces = self.inner(chunk) if self.inner is not None else [chunk]
            if isinstance(pieces, (bytes, bytearray)):
                pieces = [pieces]
            data = b"".join(pieces)
            if self.decoder is not None:
                data = self.decoder.decode(data) + (self.decoder.flush() if not chunk else b"")
            out = self.masker.feed(data, final=not chunk)
        except Exception:  # fail closed: nothing more is relayed that could not be masked
            log.exception("masking the gateway's secrets in a stream failed; ending it")
            self.failed = True
            return []
        return [out] if out else []  # never an empty chunk: it would end a chunked response


def mask_headers(secrets: SecretSet, headers) -> int:
    count = 0
    for name, value in list(headers.items(multi=True)):
        raw = value.encode("utf-8", "surrogateescape")
        spans = secrets.spans(raw)
        if spans:
            masked = bytearray(raw)
            for start, end in spans:
                masked[start:end] = b"*" * (end - start)
            headers.set_all(name, [v if v != value else masked.decode("utf-8", "surrogateescape")
                                   for v in headers.get_all(name)])
            count += len(spans)
    return count


def mask_stream(ctx, flow: http.HTTPFlow) -> http.Response | None:
    """Response header phase (last): headers masked now, the body as it streams."""
    resp = flow.response
    secrets = secrets_for(ctx, flow) if resp is not None else None
    if secrets is None:
        return None
    masker = Masker(secrets, flow)
    if mask_headers(secrets, resp.headers):
        masker._note(1)
    if resp.stream is False or resp.stream is None or ctx.answered_by is not None:
        # buffered, or the gateway's own answer (REST tools), which mitmproxy sends whole whatever
        # resp.stream says: mask_buffered masks the whole body once the transforms ran
        _masks[flow] = masker
        return None
    encoding = header(resp.headers, "content-encoding", "").strip().lower()
    encoding = "" if encoding == "identity" else encoding
    if encoding:
        if not can_decode(encoding):
            return json_response(502, {"message": f"upstream used an unsupported Content-Encoding {encoding!r}"})
        resp.headers.pop("content-encoding", None)
        reframe_as_chunked(flow)  # decoded: another length
    resp.stream = MaskedStream(resp.stream, masker, encoding or None)
    return None


_masks: "weakref.WeakKeyDictionary[http.HTTPFlow, Masker]" = weakref.WeakKeyDictionary()


def mask_buffered(ctx, flow: http.HTTPFlow) -> http.Response | None:
    """Response phase (last): a buffered body, after every transform that rewrites it."""
    masker = _masks.pop(flow, None)
    resp = flow.response
    if masker is None or resp is None:
        return None
    encoding = header(resp.headers, "content-encoding", "").strip().lower()
    if encoding and encoding != "identity" and not can_decode(encoding):  # unreadable: never passed unmasked
        return json_response(502, {"message": f"upstream used an unsupported Content-Encoding {encoding!r}"})
    body = resp.get_content(strict=False)
    if body:
        new = masker.feed(body, final=True)
        if new != body:
            resp.content = new  # re-encoded per Content-Encoding, Content-Length fixed
    return None
