"""Server -> client: decide per response whether to stream it raw, stream it through the message
layer (SSE), buffer it for rewriting (JSON that a transform must see), or relay a small answer
that nothing reads whole (`_whole`)."""

from __future__ import annotations

import logging
import weakref
from dataclasses import replace
from urllib.parse import urlsplit

from mitmproxy import http

from .headers import has_header, header
from .context import FlowContext
from .governance import annotate
from .protocol import json_relay
from .protocol.messages import SSEStream, can_decode, message_event_transform, transform_json_body
from .protocol.sse import SSEEvent
from .responses import json_response

log = logging.getLogger("mcpgw.streaming")
MAX_BUFFERED_JSON = 64 * 1024 * 1024
WHOLE_ANSWER = 16 * 1024  # an answer of at most this declared length is relayed whole, not streamed


def _ctype(resp: http.Response) -> str:
    return header(resp.headers, "content-type", "").split(";")[0].strip().lower()


def legacy_endpoint_rewriter(ctx: FlowContext):
    """Legacy HTTP+SSE: the `endpoint` event names where to POST. Point it at the gateway's route
    (the Python client refuses an endpoint on another origin)."""

    def rewrite(ev: SSEEvent) -> SSEEvent:
        if ev.event != "endpoint" or ev.data is None or ctx.match is None:
            return ev
        ctx.legacy_stream = True
        parts = urlsplit(ev.data.strip())
        upstream = parts.path + (f"?{parts.query}" if parts.query else "")
        mapped = ctx.snapshot.routes.gateway_path(ctx.match, upstream)
        if mapped is None:
            log.error("route %s: legacy endpoint %r is outside the service URL; withholding it", ctx.route_name, ev.data)
            return replace(ev, event=None, data=None, comments=["mcp-gateway: endpoint outside this route"], raw=b"")
        return replace(ev, data=mapped, raw=b"")

    return rewrite


def prepare_response(ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    resp = flow.response
    assert resp is not None
    ctype = _ctype(resp)
    if ctype == "text/event-stream":
        transforms = list(ctx.event_transforms)  # first: they see events as the upstream sent them
        if ctx.mode == "gateway" and flow.request.method == "GET":
            transforms.append(legacy_endpoint_rewriter(ctx))
        if ctx.server_transforms:
            transforms.append(message_event_transform(ctx.server_transforms))
        if not transforms:
            resp.stream = True
            return None
        encoding = header(resp.headers, "content-encoding")
        if not can_decode(encoding):
            return json_response(502, {"message": f"upstream used an unsupported Content-Encoding {encoding!r}"})
        resp.stream = SSEStream(transforms, encoding)
        resp.headers.pop("content-encoding", None)
        resp.headers.pop("content-length", None)
        return None
    if ctype == "application/json" and ctx.server_transforms:
        declared = header(resp.headers, "content-length", "")
        if declared.isdigit() and int(declared) > MAX_BUFFERED_JSON:
            return json_response(502, {"message": "upstream JSON response too large to inspect"})
        if declared.isdigit() and int(declared) >= json_relay.SMALLEST and flow.request.method != "HEAD" \
                and header(resp.headers, "content-encoding", "identity").strip().lower() == "identity" \
                and (screen := json_relay.screen_of(ctx.server_transforms)) is not None:
            resp.stream = _relay(ctx, flow, screen, int(declared))  # relayed as it is screened (protocol/json_relay.py)
            return None
        resp.stream = False  # buffered: transform_buffered_json rewrites it
        return None
    if ctx.server_transforms and 200 <= resp.status_code < 300 and ctype != "application/json" \
            and header(resp.headers, "content-length") != "0" and resp.status_code not in (202, 204):
        # An answer that must be filtered, in a form the gateway cannot read: never pass it unfiltered.
        return json_response(502, {"message": f"upstream answered with Content-Type {ctype or 'none'!r} where the "
                                              "gateway needs application/json or text/event-stream to apply the policy"})
    resp.stream = not _whole(resp)
    return None


def _whole(resp: http.Response) -> bool:
    """A small uncompressed answer of declared length (an SSE stream never gets here): relayed
    whole. It arrives whole anyway, and mitmproxy then sends it at once rather than as headers,
    body and end through its streaming path: 0.25 ms less CPU per call on the bench machine
    (scripts/bench_floor.py, the open route). Compressed answers stream as before."""
    declared = header(resp.headers, "content-length", "")
    return declared.isascii() and declared.isdigit() and int(declared) <= WHOLE_ANSWER \
        and not has_header(resp.headers, "content-encoding")


def _relay(ctx: FlowContext, flow: http.HTTPFlow, screen, length: int) -> json_relay.JsonRelay:
    transforms = list(ctx.server_transforms)
    route, flow_ref = ctx.route_name, weakref.ref(flow)  # the flow holds the relay: no cycle back

    def cut(why: str) -> None:
        log.warning("route %s: %s; the answer was ended unparseable", route, why)
        if (held := flow_ref()) is not None:
            annotate.note(held, f"answer ended unparseable: {why}")

    patches = [p for p in (getattr(t, "raw_patch", None) for t in transforms) if p is not None]
    fits = [f for f in (getattr(t, "raw_fit", None) for t in transforms) if f is not None]
    return json_relay.JsonRelay(screen, length, lambda body: transform_json_body(body, transforms), patches, cut,
                                fits=fits)


def transform_buffered_json(ctx: FlowContext, flow: http.HTTPFlow) -> None:
    resp = flow.response
    if resp is None or not ctx.server_transforms or _ctype(resp) != "application/json" or resp.stream:
        return None
    # (mitmproxy's get_content scans the headers again for the encoding: most answers have none)
    body = resp.get_content(strict=False) if has_header(resp.headers, "content-encoding") else resp.raw_content
    if body is None:
        return None
    new = transform_json_body(body, ctx.server_transforms)
    if new is not None:
        resp.content = new  # re-encodes per Content-Encoding and fixes Content-Length
    return None
