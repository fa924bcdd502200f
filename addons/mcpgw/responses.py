"""Every answer the gateway gives itself: JSON for HTTP-level refusals, JSON-RPC errors for
refused messages (as JSON or as an SSE event, whichever the client asked for)."""

from __future__ import annotations

import json
import re
from typing import Any

from mitmproxy import http

JSON = "application/json"
SSE = "text/event-stream"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(status: int, body: dict, headers: dict[str, str] | None = None) -> http.Response:
    resp = http.Response.make(status, _dumps(body), {"Content-Type": JSON, "Cache-Control": "no-store"})
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


# RFC 6750 section 3: error_description is %x20-21 / %x23-5B / %x5D-7E only. Without quote and
# backslash no escaping is needed, so parsers that do not unescape (the official SDKs' regexes)
# read the whole text. '=' goes too: those parsers find `scope=`/`resource_metadata=` anywhere.
_NOT_IN_DESCRIPTION = re.compile(r'[^\x20\x21\x23-\x3c\x3e-\x5b\x5d-\x7e]')
_DESCRIPTION_SWAPS = str.maketrans({'"': "'", "\\": "/", "=": ":"})
DESCRIPTION_MAX = 300


def challenge_text(text: str, limit: int = DESCRIPTION_MAX) -> str:
    """`text` as the quoted-string of a WWW-Authenticate error_description: quote, backslash and
    '=' replaced, controls and non-ASCII removed, at most `limit` characters."""
    cleaned = _NOT_IN_DESCRIPTION.sub("", text.translate(_DESCRIPTION_SWAPS))
    return cleaned if len(cleaned) <= limit else cleaned[:limit - 3] + "..."


def quoted(value: str) -> str:
    """An RFC 9110 quoted-string (for URLs and other values the gateway chose itself)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bearer_challenge(*, resource_metadata: str | None = None, error: str | None = None,
                     description: str | None = None) -> str:
    """A `WWW-Authenticate: Bearer` value. `error` only for a credential that was sent and refused
    (RFC 6750 section 3.1: a request without one gets no error code)."""
    params = [f"resource_metadata={quoted(resource_metadata)}"] if resource_metadata is not None else []
    if error is not None:
        params.append(f'error="{error}"')
        if description:
            params.append(f'error_description="{challenge_text(description)}"')
    return "Bearer " + ", ".join(params) if params else "Bearer"


def insufficient_scope(description: str) -> dict[str, str]:
    """The headers of a 403 refusal (`deny_response: http403`), the gateway's reason included so
    that clients which show error_description say why."""
    return {"WWW-Authenticate": bearer_challenge(error="insufficient_scope", description=description)}


def denied_with_reason(error: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC denial of a 403 answer, its text also under OAuth's names in `data`."""
    text = error["error"]["message"]
    return {**error, "error": {**error["error"], "data": {"error": "insufficient_scope", "error_description": text}}}


def wants_sse_only(request: http.Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return SSE in accept and JSON not in accept and "*/*" not in accept


def jsonrpc_errors_response(request: http.Request, errors: list[dict], *, batch: bool = False,
                            status: int = 200, headers: dict[str, str] | None = None) -> http.Response:
    """Answer JSON-RPC error objects: one message, or an array for a batch."""
    payload: Any = errors if batch else errors[0]
    if wants_sse_only(request):
        events = b"".join(b"event: message\ndata: " + _dumps(e) + b"\n\n" for e in errors)
        resp = http.Response.make(status, events, {"Content-Type": SSE, "Cache-Control": "no-store"})
    else:
        resp = http.Response.make(status, _dumps(payload), {"Content-Type": JSON, "Cache-Control": "no-store"})
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def jsonrpc_error(id: Any, code: int, message: str, data: Any = None) -> dict:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id, "error": err}


def gateway_failure(request: http.Request | None, what: str) -> http.Response:
    """Fail closed: the gateway could not decide, so nothing is forwarded."""
    body = {"error": "gateway_error", "message": f"The gateway refused this request because it could not {what}. "
            "Nothing was forwarded. See the gateway log."}
    if request is not None and request.method == "POST" and "json" in request.headers.get("content-type", ""):
        return jsonrpc_errors_response(request, [jsonrpc_error(None, -32603, body["message"])], status=500)
    return json_response(500, body)


class _ReplacementBody:
    """Stream callable for an answer that replaces the upstream's after its headers arrived.

    mitmproxy goes on reading the upstream body into whatever `flow.response` is, so a plain
    replacement would reach the client with the upstream's body. This sends the replacement's own
    body once and discards every upstream chunk."""

    def __init__(self, body: bytes):
        self.body = body

    def __call__(self, chunk: bytes) -> list[bytes]:
        out, self.body = ([self.body] if self.body else []), b""
        return out


def replacing_upstream(resp: http.Response) -> http.Response:
    resp.stream = _ReplacementBody(resp.raw_content or b"")
    return resp
