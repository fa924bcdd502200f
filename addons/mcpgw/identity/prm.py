"""OAuth discovery through the gateway: Protected Resource Metadata (RFC 9728).

An MCP client that gets a 401 follows `WWW-Authenticate: Bearer resource_metadata="..."` to the
PRM document, and refuses a document whose `resource` is not the URL it connected to. Behind a
gateway that URL is the gateway's, so the gateway

- answers a request without an Authorization header with that challenge (`challenge`),
- serves each route's PRM at /.well-known/oauth-protected-resource/<route path>, either the
  upstream's document with `resource` replaced (`mode: rewrite`, the upstream stays the
  authorization authority) or one built from the policy (`mode: serve`, the gateway is the
  resource server, e.g. the token-swap pattern),
- points an upstream 401's `resource_metadata` at the gateway's document instead of the
  upstream's.

The document's `resource` is one the gateway established (identity/resource.py: the configured
resource, gateway.urls, the listener's own address), never the Host header alone; the URLs that
point at the document follow the listener and Host the client used. In intercept mode the client
already talks to the upstream's own URL, so its PRM passes through."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mitmproxy import http

from ..headers import has_header, header, header_values
from ..policy.derived import PerPolicy
from ..responses import bearer_challenge, json_response, quoted
from .prm_settings import PrmConfig, effective_config
from .resource import for_client as resource_for_client

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..policy.models import Policy, Route, Service

log = logging.getLogger("mcpgw.prm")

WELL_KNOWN = "/.well-known/oauth-protected-resource"  # RFC 9728 section 3
MAX_DOCUMENT_SIZE = 64 * 1024
# What the PRM request to the upstream keeps from the client's: nothing that could identify or
# authenticate the caller (Authorization, Cookie, API keys, custom headers) ever goes out.
FORWARDED_HEADERS = frozenset({"host", "accept", "user-agent", "mcp-protocol-version"})
_RESOURCE_METADATA = re.compile(r'(\bresource_metadata\s*=\s*)("(?:[^"\\]|\\.)*"|[^\s,]*)', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Discovery:
    """A route's effective PRM settings for one policy version."""

    config: PrmConfig
    upstream_url: str | None  # rewrite mode: the upstream's document
    challenge_message: str = ""  # the challenge's body: what is missing, and why (not a bare "Unauthorized")


def upstream_metadata_url(service: "Service") -> str:
    """Where RFC 9728 puts the PRM of the service's URL."""
    parts = urlsplit(service.url)
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{service.path}"


def _compile(policy: "Policy") -> dict[str, Discovery]:
    found = {}
    for name, route in policy.routes.items():
        config = effective_config(route)
        if config is None:
            continue
        upstream = None
        if config.mode == "rewrite":
            upstream = config.upstream_url or upstream_metadata_url(policy.services[route.service])
        found[name] = Discovery(config, upstream, _challenge_message(config, route))
    return found


def _challenge_message(config: PrmConfig, route: "Route") -> str:
    # A client with a correct API key and no token must not get a wrong key's "Unauthorized".
    token = ("your own OAuth access token for the upstream MCP server, which the gateway passes through to it"
             if config.mode == "rewrite" else "an OAuth access token for this route")
    alone = " An API key alone is not enough on this route." if getattr(route, "key_auth", None) else ""
    return (f"Missing Authorization header: this route needs {token}, sent as 'Authorization: Bearer <token>'. "
            f"WWW-Authenticate names the protected resource metadata, which says where to get one.{alone}")


_discovery = PerPolicy(_compile)


def discovery(ctx: "FlowContext") -> Discovery | None:
    if ctx.match is None:
        return None
    return _discovery(ctx.snapshot.policy).get(ctx.match.name)


def is_metadata_read(request: http.Request) -> bool:
    """GET or HEAD without a body, or a CORS preflight: all a client does to read a PRM document."""
    method = request.method
    if method == "OPTIONS":
        return has_header(request.headers, "access-control-request-method")
    return method in ("GET", "HEAD") and not has_header(request.headers, "transfer-encoding") \
        and header(request.headers, "content-length", "0").strip() == "0"


def is_metadata_request(ctx: "FlowContext", request: http.Request) -> bool:
    """Intercept mode: a read of the upstream's own PRM at a route's exact RFC 9728 path (routing
    makes that a "prm" match, and any other method on it an "mcp" one). The document is public:
    no credential is required for it. Any other path or method, the well-known prefix included,
    goes through identity like every request. In gateway mode the gateway serves its own document
    (PRM_REQUEST_PHASES), and nothing counts as public here."""
    match = ctx.match
    return ctx.mode == "intercept" and match is not None and match.kind == "prm" and is_metadata_read(request)


# -- challenge (MCP requests) --------------------------------------------------------------------


def challenge(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """`challenge: true`: no Authorization header, no entry. Runs before every other identity check,
    so a client without a token learns where to get one (the recipe's datakit step)."""
    found = discovery(ctx)
    request = flow.request
    if found is None or not found.config.challenge or is_metadata_request(ctx, request):
        return None
    if any(v.strip() for v in header_values(request.headers, "authorization")):
        return None
    log.debug("route %s: no Authorization header; answering with the PRM challenge", ctx.route_name)
    # No error code: the request carried no credential at all (RFC 6750 section 3.1).
    return json_response(401, {"message": found.challenge_message},
                         {"WWW-Authenticate": bearer_challenge(resource_metadata=ctx.prm_url)})


def rewrite_upstream_challenge(ctx: "FlowContext", flow: http.HTTPFlow) -> None:
    """Gateway mode: an upstream challenge naming the upstream's PRM names the gateway's instead;
    every other parameter (error=, scope=, ...) is kept."""
    response = flow.response
    if (ctx.mode != "gateway" or not ctx.upstream_set or response is None or ctx.match is None
            or ctx.match.kind != "mcp" or discovery(ctx) is None):
        return None
    values = header_values(response.headers, "www-authenticate")
    if not any("resource_metadata" in v.lower() for v in values):
        return None
    replacement = quoted(ctx.prm_url)
    rewritten = [_RESOURCE_METADATA.sub(lambda m: m.group(1) + replacement, v) for v in values]
    response.headers.set_all("WWW-Authenticate", rewritten)
    return None


# -- the well-known document ---------------------------------------------------------------------


def served_document(ctx: "FlowContext", flow: http.HTTPFlow, config: PrmConfig) -> dict[str, Any]:
    # `resource`: one the OAuth phase accepts as a token's audience (identity/resource.py)
    doc: dict[str, Any] = {"resource": resource_for_client(ctx, flow, config.resource),
                           "authorization_servers": list(config.authorization_servers)}
    if config.scopes_supported is not None:
        doc["scopes_supported"] = list(config.scopes_supported)
    doc["bearer_methods_supported"] = list(config.bearer_methods_supported)
    doc.update(config.metadata)
    return doc


def _point_at(request: http.Request, url: str) -> None:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    request.headers = http.Headers([(k, v) for k, v in request.headers.fields
                                    if k.decode("latin-1").lower() in FORWARDED_HEADERS])
    request.raw_content = b""
    request.trailers = None
    request.scheme = parts.scheme
    request.host = parts.hostname or ""
    request.port = port
    request.path = parts.path or "/"
    default_port = 443 if parts.scheme == "https" else 80
    request.host_header = request.host if port == default_port else f"{request.host}:{port}"


def serve_metadata(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """The well-known PRM path of a route: answer it (serve) or fetch the upstream's (rewrite)."""
    found = discovery(ctx)
    if ctx.mode != "gateway" or found is None or ctx.match is None or ctx.match.kind != "prm":
        return None  # a route without discovery settings: not routed (404)
    if flow.request.method != "GET":
        return json_response(405, {"message": f"Method {flow.request.method} is not allowed here"}, {"Allow": "GET"})
    if found.config.mode == "serve":
        return json_response(200, served_document(ctx, flow, found.config))
    assert found.upstream_url is not None
    _point_at(flow.request, found.upstream_url)
    ctx.upstream_set = True
    return None


def _is_json(response: http.Response) -> bool:
    ctype = header(response.headers, "content-type", "").split(";")[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


def _bad_upstream(ctx: "FlowContext", problem: str) -> http.Response:
    log.warning("route %s: upstream protected resource metadata unusable: %s", ctx.route_name, problem)
    return json_response(502, {"message": f"The upstream's protected resource metadata is unusable ({problem})"})


def buffer_upstream_metadata(ctx: "FlowContext", flow: http.HTTPFlow) -> None:
    """Response headers of the upstream's PRM: buffer it (never stream it) so that
    `rewrite_upstream_metadata` can check and edit it before the client sees any of it."""
    if ctx.match is not None and ctx.match.kind == "prm" and ctx.upstream_set and flow.response is not None:
        flow.response.stream = False
    return None


def rewrite_upstream_metadata(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """Replace `resource` with the route's public URL; every other field stays, in order. Anything
    but a 200 JSON object is answered 502."""
    response = flow.response
    if ctx.match is None or ctx.match.kind != "prm" or not ctx.upstream_set or response is None:
        return None
    if response.status_code != 200:
        return _bad_upstream(ctx, f"HTTP {response.status_code}")
    if not _is_json(response):
        return _bad_upstream(ctx, "not JSON")
    try:
        body = response.get_content(strict=True) or b""
    except ValueError:
        return _bad_upstream(ctx, "undecodable body")
    if len(body) > MAX_DOCUMENT_SIZE:
        return _bad_upstream(ctx, "too large")
    try:
        document = json.loads(body)
    except ValueError:
        return _bad_upstream(ctx, "invalid JSON")
    if not isinstance(document, dict):
        return _bad_upstream(ctx, "not a JSON object")
    found = discovery(ctx)
    resource = resource_for_client(ctx, flow, found.config.resource if found else None)
    if "resource" in document:
        document["resource"] = resource
    else:
        document = {"resource": resource, **document}
    response.content = json.dumps(document, ensure_ascii=False).encode()
    response.headers.pop("etag", None)  # it named the upstream's bytes
    return None
