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
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from mitmproxy import http
from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..headers import has_header, header, header_values
from ..policy.base import StrictModel
from ..policy.derived import PerPolicy
from ..responses import bearer_challenge, json_response, quoted
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
_CORE_FIELDS = ("resource", "authorization_servers", "scopes_supported", "bearer_methods_supported")
_RESOURCE_METADATA = re.compile(r'(\bresource_metadata\s*=\s*)("(?:[^"\\]|\\.)*"|[^\s,]*)', re.IGNORECASE)


def _absolute_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {value!r}")
    if parts.fragment:
        raise ValueError(f"{what} must not have a fragment: {value!r}")
    return value


class PrmConfig(StrictModel):
    """A route's OAuth discovery settings."""

    challenge: bool = Field(False, description="Answer MCP requests without an Authorization header with 401 and "
                                               "a WWW-Authenticate pointing at this route's PRM")
    mode: Literal["rewrite", "serve"] = Field("rewrite", description="rewrite: the upstream's PRM with `resource` "
                                              "replaced; serve: a PRM built from these settings")
    upstream_url: str | None = Field(None, description="rewrite: where the upstream's PRM is (default: "
                                     "<service origin>/.well-known/oauth-protected-resource<service path>)")
    resource: str | None = Field(None, description="The `resource` clients see (default: the route's URL under "
                                 "gateway.urls or the listener's own address; docs/identity.md)")
    authorization_servers: list[str] = Field(default_factory=list, description="serve: authorization server issuer URLs")
    scopes_supported: list[str] | None = Field(None, description="serve: scopes listed in the document")
    bearer_methods_supported: list[Literal["header", "body", "query"]] = Field(
        default_factory=lambda: ["header"], description="serve: how a bearer token may be sent")
    metadata: dict[str, Any] = Field(default_factory=dict, description="serve: further RFC 9728 fields, e.g. resource_name")

    @field_validator("upstream_url", "resource")
    @classmethod
    def _check_url(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else _absolute_url(v, info.field_name)

    @field_validator("authorization_servers")
    @classmethod
    def _check_servers(cls, v: list[str]) -> list[str]:
        return [_absolute_url(u, "authorization_servers") for u in v]

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, v: dict[str, Any]) -> dict[str, Any]:
        if clash := [k for k in v if k in _CORE_FIELDS]:
            raise ValueError(f"set {', '.join(clash)} with the field of that name, not under metadata")
        try:
            json.dumps(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata must be plain JSON values: {e}") from None
        return v

    @model_validator(mode="after")
    def _fields_fit_mode(self) -> "PrmConfig":
        serve_only = {"authorization_servers", "scopes_supported", "bearer_methods_supported", "metadata"}
        wrong = (self.model_fields_set & serve_only) if self.mode == "rewrite" else (self.model_fields_set & {"upstream_url"})
        if wrong:
            raise ValueError(f"{', '.join(sorted(wrong))} cannot be used with mode: {self.mode}")
        return self


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


def effective_config(route: "Route") -> PrmConfig | None:
    """The route's `prm`, filled in from its `oauth` settings where it leaves something out. A
    route with `oauth` and no `prm` serves the document of its oauth settings."""
    oauth = getattr(route, "oauth", None)
    config = route.prm
    if oauth is None or (config is not None and config.mode == "rewrite"):
        return config
    if config is None:
        config = PrmConfig(mode="serve")
    updates = {}
    if config.resource is None and getattr(oauth, "resource", None):
        updates["resource"] = oauth.resource
    if not config.authorization_servers:
        updates["authorization_servers"] = list(getattr(oauth, "authorization_servers", None) or [])
    if config.scopes_supported is None and getattr(oauth, "scopes_supported", None):
        updates["scopes_supported"] = list(oauth.scopes_supported)
    return config.model_copy(update=updates)


def check_discovery(route_name: str, route: "Route") -> None:
    """At policy load: a served document must name an authorization server (the MCP
    authorization spec requires one)."""
    config = effective_config(route)
    if config is not None and config.mode == "serve" and not config.authorization_servers:
        raise ValueError(f"route {route_name!r}: prm mode serve needs authorization_servers "
                         "(or an oauth setting on the route that has them)")


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
