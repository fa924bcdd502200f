"""The gateway pipeline: a fixed order of phases, like Kong's plugin phases.

request -> route -> identity -> governance -> credentials -> upstream
response -> governance -> audit

A phase takes (ctx, flow) and returns None to continue or an http.Response to answer the client
now (a refusal). Phases may be async (OAuth introspection, JWKS)."""

from __future__ import annotations

import inspect
from typing import Awaitable, Callable

from mitmproxy import http

from . import credentials, forwarding, guards, inbound, redaction, redirects, streaming, transform
from .ai import answers as ai_answers, balancer as ai_balancer, guard as ai_guard, mcp_tools as ai_mcp, request as ai_request
from .context import FlowContext
from .governance import access, enforce, filtering, no_tools, removed
from .identity import claim_headers, exchange, keyauth, oauth, prm, upstream_headers
from .limits import phase as limits
from .mcpserver import server as mcp_server
from .limits import tokens as token_limits
from .integrity import own_secrets, phases as integrity
from .sessions import binding as sessions
from .upstream_proxy import forward as upstream_proxy
from .request_validator import phase as request_validator
from .telemetry import answers as telemetry_answers

Phase = Callable[[FlowContext, http.HTTPFlow], "http.Response | None | Awaitable[http.Response | None]"]

# At request headers, before the body is read: everything the request line and headers decide,
# identity included, so that a refused request is answered without its body ever being read.
# Gateway-mode-only phases check ctx.mode.
HEADER_PHASES: tuple[Phase, ...] = (
    redaction.note_client_credentials,  # first: whatever happens next, these values stay out of logs
    forwarding.check_declared_size,
    guards.check_origin,
    guards.cors_preflight,
    forwarding.check_method,
    forwarding.refuse_upgrades,
    # identity (key-auth reads headers and the query string only: key_in_body is refused at load)
    upstream_headers.strip_client_identity_headers,
    prm.challenge,
    oauth.authenticate,
    claim_headers.add_claim_headers,  # the caller's validated claims, before any phase reads a header
    keyauth.authenticate,
    sessions.check_session,  # after every identity phase: a session id must be the caller's own
    limits.check_request_limits,  # rules counting HTTP requests: a caller over them is refused before its body is read
)

# At request end (body available), for MCP traffic that passed the header phases.
REQUEST_PHASES: tuple[Phase, ...] = (
    forwarding.check_body,
    request_validator.validate_request,  # Kong's request-validator (priority 999): after identity, before acl (950)
    inbound.parse_client_messages,
    # governance
    access.check_route_access,
    no_tools.refuse_without_tools,  # a caller no tool is allowed to is refused whole, before per-tool checks
    removed.refuse_removed_methods,  # before enforce judges params of a method the revision removed
    enforce.enforce_acl,
    limits.check_limits,  # after the ACL: a denied call costs nothing, and each message's tool is decided
    integrity.sync_pins,  # shared trust-on-first-use pins (Redis) as they are now, before they judge anything
    integrity.check_tools,  # after the ACL: judges only calls governance let through, lists after its filter
    exchange.exchange_token,  # after every decision: a refused request never costs an RFC 8693 exchange
    own_secrets.note_exchanged,  # the exchanged token is the gateway's: masked if the upstream echoes it
    # credentials
    upstream_headers.add_identity_headers,  # after every identity phase
    credentials.mediate,  # after the identity headers, which its operations may change (as in Kong)
    transform.transform_request,  # after the credential, as Kong runs request-transformer after -advanced
    mcp_server.serve,  # rest_tools routes: the gateway answers where it would forward (docs/rest-tools.md)
    forwarding.forward,
    credentials.check_destination,  # the final target, once forward has set it
    upstream_proxy.route_via,  # through the route's forward proxy, once the target is final (docs/rest-tools.md)
    forwarding.not_routed,
)

# For a route's /.well-known/oauth-protected-resource/<route> (gateway mode): discovery must work
# before the client has any credential, so no identity phase runs here.
PRM_HEADER_PHASES: tuple[Phase, ...] = (
    redaction.note_client_credentials,
    forwarding.check_declared_size,
    guards.check_origin,
    guards.cors_preflight,
)

PRM_REQUEST_PHASES: tuple[Phase, ...] = (
    forwarding.check_body,
    prm.serve_metadata,
    forwarding.not_routed,
)

RESPONSE_HEADER_PHASES: tuple[Phase, ...] = (
    redaction.mask_sent_request,  # first, so a phase answering instead cannot skip it
    limits.add_headers,
    redirects.rewrite_locations,  # before anything may answer instead: no upstream address reaches the client
    guards.add_cors_to_response,
    sessions.record_session,  # before prepare_response, which runs the event watcher it may add
    filtering.correlate_accepted,
    streaming.prepare_response,
    prm.rewrite_upstream_challenge,
    prm.buffer_upstream_metadata,  # after prepare_response, which would stream it
    telemetry_answers.watch_upstream,  # reads the stream as the upstream sends it (telemetry on)
    own_secrets.mask_stream,  # last: masks what every stream set above emits (integrity/own_secrets.py)
)

RESPONSE_PHASES: tuple[Phase, ...] = (
    prm.rewrite_upstream_metadata,
    streaming.transform_buffered_json,
    own_secrets.mask_buffered,  # after every transform that rewrites a buffered body
)


# LLM routes (a route with `ai:`, docs/ai.md): the same header phases (identity), then these
# instead of the MCP ones: the body is an OpenAI request, not JSON-RPC.
AI_REQUEST_PHASES: tuple[Phase, ...] = (
    forwarding.check_body,
    request_validator.validate_request,  # the body is the OpenAI request here: what Kong's plugin would judge
    access.check_route_access,
    ai_balancer.choose_target,  # balanced routes: a reachable target, before its model and key apply
    ai_request.prepare,  # route type, model, options, include_usage
    ai_guard.check_prompt,  # allow/deny patterns over the prompt, before anything is changed for the provider
    limits.check_limits,  # request limits (rules without methods/tools) apply to LLM routes too
    token_limits.check_tokens,  # a consumer whose token budget is spent is refused before the provider is asked
    ai_mcp.govern_tools,  # MCP tools inside the request: server_url, allowed_tools, the MCP route's credential
    exchange.exchange_token,
    own_secrets.note_exchanged,
    ai_request.write_body,  # after every phase that edits the parsed request
    upstream_headers.add_identity_headers,
    ai_request.provider_credential,  # the gateway's key out, the provider key in
    transform.transform_request,
    forwarding.forward,
    ai_request.set_endpoint,  # after forward: the route type's endpoint under the provider base URL
    ai_balancer.apply_target,  # or, on a balanced route, under the chosen target's
    forwarding.not_routed,
)

AI_RESPONSE_HEADER_PHASES: tuple[Phase, ...] = (
    redaction.mask_sent_request,
    limits.add_headers,  # X-AI-RateLimit-* of token limits
    redirects.rewrite_locations,
    guards.add_cors_to_response,
    ai_answers.prepare_answer,  # streams event by event, reading usage as it passes
    own_secrets.mask_stream,  # last: the provider echoing its key never hands it to the caller
)

AI_RESPONSE_PHASES: tuple[Phase, ...] = (
    ai_answers.finish,  # usage of a JSON answer; one LLM call for audit, metrics and limits
    own_secrets.mask_buffered,
)


def _is_prm(ctx: FlowContext) -> bool:
    return ctx.match is not None and ctx.match.kind == "prm"


def header_phases(ctx: FlowContext) -> tuple[Phase, ...]:
    return PRM_HEADER_PHASES if _is_prm(ctx) else HEADER_PHASES


def request_phases(ctx: FlowContext) -> tuple[Phase, ...]:
    if _is_prm(ctx):
        return PRM_REQUEST_PHASES
    return AI_REQUEST_PHASES if ai_request.is_llm(ctx) else REQUEST_PHASES


def response_header_phases(ctx: FlowContext) -> tuple[Phase, ...]:
    return AI_RESPONSE_HEADER_PHASES if ctx.ai is not None else RESPONSE_HEADER_PHASES


def response_phases(ctx: FlowContext) -> tuple[Phase, ...]:
    return AI_RESPONSE_PHASES if ctx.ai is not None else RESPONSE_PHASES


_ASYNC: dict[Phase, bool] = {}  # phase -> is a coroutine function; asked once per phase, not per request


def _is_async(phase: Phase) -> bool:
    found = _ASYNC.get(phase)
    if found is None:
        found = _ASYNC[phase] = inspect.iscoroutinefunction(phase)
    return found


async def run(phases: tuple[Phase, ...], ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    for phase in phases:
        result = phase(ctx, flow)
        if result is not None and _is_async(phase):  # a coroutine; a sync phase returned a response or None
            result = await result
        if result is not None:
            ctx.answered_by = phase_name(phase)
            return result
    return None


def run_sync(phases: tuple[Phase, ...], ctx: FlowContext, flow: http.HTTPFlow) -> http.Response | None:
    for phase in phases:
        result = phase(ctx, flow)
        if result is not None:
            if _is_async(phase):  # a wiring error, caught by the tests
                result.close()
                raise TypeError(f"phase {phase.__qualname__} is async but runs in a synchronous hook")
            ctx.answered_by = phase_name(phase)
            return result
    return None


def phase_name(phase: Phase) -> str:
    """A phase as audit records name it: module path inside the package, then the function."""
    module = getattr(phase, "__module__", "").removeprefix("mcpgw.")
    return f"{module}.{getattr(phase, '__qualname__', type(phase).__name__)}"
