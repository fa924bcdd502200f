"""Request phases of an LLM route: what the provider receives.

prepare: the route type's request (POST, a JSON object), the model (a request naming another
model than the route's is refused, as Kong does), the options of the route and of the caller's
overrides, and for chat streams `stream_options.include_usage`, so that every stream reports its
usage (the extra chunk is dropped again for a client that did not ask: answers.py).
provider_credential: the gateway's own key never goes on; the client's provider key is removed
and the route's injected, unless `auth.allow_override` and the client sent one.
set_endpoint: after forwarding.forward, the route type's endpoint under the provider base URL."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from .. import headers
from ..identity.keyauth import remove_key
from ..policy.derived import PerPolicy
from ..responses import json_response
from .settings import AiAuth, AiSettings, ModelOptions
from .usage import Usage

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..identity.consumers import Identity
    from ..policy.models import Policy

# Headers that carry a provider key in OpenAI-compatible APIs (OpenAI, Azure, Anthropic-style proxies)
PROVIDER_KEY_HEADERS = ("authorization", "api-key", "x-api-key")


@dataclass(slots=True)
class LlmState:
    """Per flow (FlowContext.ai): what the request phases decided, and what the answer reported."""

    settings: AiSettings
    model: str | None
    options: ModelOptions
    stream: bool = False
    usage_injected: bool = False  # the gateway added include_usage: the usage chunk is not the client's
    started: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    ended: float | None = None
    usage: Usage | None = None
    answered_model: str | None = None
    stream_error: str | None = None
    published: bool = False
    body: dict | None = None  # the parsed request, between prepare and write_body
    dirty: bool = False  # a phase changed it: write_body serializes it again
    # MCP tools inside the request (mcp_tools.py): server_label -> (MCP route, tools the caller
    # may call there, or None when the route does not restrict them)
    mcp_servers: dict[str, tuple[str | None, frozenset[str] | None]] = field(default_factory=dict)
    mcp_calls: list[dict] = field(default_factory=list)  # mcp_call items of the answer, for audit
    target: Any = None  # balanced routes: the chosen balancer.TargetState
    attempts: int = 0  # targets tried (connection checks included)
    target_done: bool = False
    payload: dict | None = None  # logging.log_payloads: the request as sent, then the JSON answer
    # balanced routes that retry after an answer (relay.py): the client's own model and option
    # fields, the targets still to try, and the relay job's one-time token
    client_fields: dict | None = None
    candidates: list = field(default_factory=list)
    relay_token: str | None = None
    retry_job: Any = None  # a JSON request's relay.Job, until its first answer is seen (relay.holds)


def ai_error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> http.Response:
    """A refusal in the form OpenAI's SDKs parse: {"error": {message, type, param, code}}."""
    return json_response(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})


def settings_of(ctx: "FlowContext") -> AiSettings | None:
    if ctx.match is None or ctx.match.kind != "mcp":
        return None
    return getattr(ctx.match.route.route, "ai", None)


def is_llm(ctx: "FlowContext") -> bool:
    return settings_of(ctx) is not None


def _merge(base: ModelOptions, over: ModelOptions) -> ModelOptions:
    set_fields = {k: getattr(over, k) for k in over.model_fields_set if getattr(over, k) is not None}
    return base.model_copy(update=set_fields) if set_fields else base


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A route's overrides, resolved once per policy version."""

    by_consumer: dict[str, tuple[str | None, ModelOptions]]
    raw_groups: dict[str, tuple[str | None, ModelOptions]]  # in the order the route declares them


def _compile(policy: "Policy") -> dict[str, _Compiled]:
    out = {}
    for name, route in policy.routes.items():
        s = getattr(route, "ai", None)
        if s is None:
            continue
        groups = {g: (o.name, o.options) for g, o in s.consumer_groups.items()}
        consumers = {c: (o.name, o.options) for c, o in s.consumers.items()}
        out[name] = _Compiled(consumers, groups)
    return out


_compiled = PerPolicy(_compile)


def effective_model(ctx: "FlowContext", settings: AiSettings, target: Any = None) -> tuple[str | None, ModelOptions]:
    """The route's model and options, then the target's, then the caller's group's (first
    declared group that has one), then the caller's own, each replacing only what it sets."""
    name, options = settings.model.name, settings.model.options
    if target is not None and target.target.model is not None:
        name, options = target.target.model.name or name, _merge(options, target.target.model.options)
    compiled = _compiled(ctx.snapshot.policy).get(ctx.match.name)
    ident: Identity | None = ctx.identity
    if compiled is None or ident is None or ident.method == "anonymous":
        return name, options
    for group, override in compiled.raw_groups.items():
        if group in ident.groups:
            over_name, over = override
            name, options = over_name or name, _merge(options, over)
            break
    for subject in ident.subjects():
        if subject in compiled.by_consumer:
            over_name, over = compiled.by_consumer[subject]
            name, options = over_name or name, _merge(options, over)
            break
    return name, options


def _apply_options(body: dict, options: ModelOptions, route_type: str) -> bool:
    changed = False
    limit_field = "max_output_tokens" if route_type == "llm/v1/responses" else "max_tokens"
    for key, value in (("temperature", options.temperature), ("top_p", options.top_p), (limit_field, options.max_tokens)):
        if value is not None and body.get(key) != value:
            body[key] = value
            changed = True
    if route_type == "llm/v1/chat" and options.max_tokens is not None and "max_completion_tokens" in body:
        del body["max_completion_tokens"]  # the newer name of the same limit: the route's applies
        changed = True
    return changed


RETARGET_FIELDS = ("model", "temperature", "top_p", "max_tokens", "max_output_tokens", "max_completion_tokens")


def body_for_target(ctx: "FlowContext", state: LlmState, sent: bytes, target: Any) -> tuple[bytes, str | None, ModelOptions] | None:
    """The request body as sent to one target, for another target of the route: the client's own
    model and option fields back, then the other target's applied as prepare does; with the
    model and options it asks for. None: the client named a model that target does not serve."""
    body = json.loads(sent)
    for key in RETARGET_FIELDS:
        body.pop(key, None)
    body.update(state.client_fields or {})
    name, options = effective_model(ctx, state.settings, target)
    asked = body.get("model")
    if name is not None and asked is not None and asked != name:
        return None
    if name is not None:
        body["model"] = name
    _apply_options(body, options, state.settings.route_type)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(), body.get("model"), options


def auth_of(settings: AiSettings, target: Any) -> AiAuth | None:
    """The provider key a request to that target carries: the target's own, else the route's."""
    own = target.target.auth if target is not None else None
    return own if own is not None else settings.auth


def swap_auth(req: http.Request, old: AiAuth | None, new: AiAuth | None) -> None:
    """Another target's key in place of the first one's: every provider key header and parameter
    the first request could carry goes, the client's own too (it never follows to a second target)."""
    if old is None and new is None:
        return  # no stored key anywhere: the client's own goes to every target
    names = [*PROVIDER_KEY_HEADERS, *(a.header_name for a in (old, new) if a is not None and a.header_name)]
    headers.remove(req.headers, *names)
    for a in (old, new):
        if a is not None and a.param_name:
            req.query.pop(a.param_name, None)
    if new is not None and new.header_name is not None:
        headers.put(req.headers, new.header_name, new.header_value.reveal())
    if new is not None and new.param_name is not None:
        req.query.set_all(new.param_name, [new.param_value.reveal()])


def prepare(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    settings = settings_of(ctx)
    if settings is None:
        return None
    req = flow.request
    if req.method != "POST":
        return ai_error(405, f"{req.method} is not accepted on this LLM route; it takes POST {settings.endpoint}")
    if ctx.mode == "intercept":
        expected = ctx.match.route.service.path + settings.endpoint
        if req.path.split("?", 1)[0] != expected:
            return ai_error(404, f"This route serves {settings.route_type} at {expected} only", code="unknown_url")
    try:
        body = json.loads(req.get_content(strict=False) or b"")
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        return ai_error(400, "The request body must be a JSON object")
    earlier: LlmState | None = ctx.ai  # balancer.choose_target's, with the target
    if earlier is not None and earlier.candidates:  # another target may get it: keep what the client asked
        earlier.client_fields = {k: body[k] for k in RETARGET_FIELDS if k in body}
    name, options = effective_model(ctx, settings, earlier.target if earlier is not None else None)
    changed = False
    asked = body.get("model")
    if name is not None:
        if asked is not None and asked != name:
            return ai_error(400, f"cannot use own model - must be: {name}", code="model_not_allowed")
        if asked is None:
            body["model"] = name
            changed = True
    elif not isinstance(asked, str) or not asked:
        return ai_error(400, "The request must name a model: this route sets none")
    changed |= _apply_options(body, options, settings.route_type)
    state = earlier or LlmState(settings, None, options)
    state.model, state.options, state.stream = body.get("model"), options, body.get("stream") is True
    if state.stream and settings.route_type == "llm/v1/chat":
        stream_options = body.get("stream_options")
        if not isinstance(stream_options, dict) or stream_options.get("include_usage") is not True:
            body["stream_options"] = {**(stream_options if isinstance(stream_options, dict) else {}), "include_usage": True}
            state.usage_injected = changed = True
    if state.stream:
        headers.put(req.headers, "Accept-Encoding", "identity")  # usage is read from the events as they pass
    state.body, state.dirty = body, changed
    ctx.ai = state
    return None


def write_body(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """After every phase that edits the parsed request: one serialization, only if one did."""
    state: LlmState | None = ctx.ai
    if state is None or state.body is None:
        return None
    if state.dirty:
        headers.set_body(flow.request, json.dumps(state.body, separators=(",", ":"), ensure_ascii=False).encode())
    if state.settings.logging.log_payloads:
        state.payload = {"request": state.body}  # as sent; the audit writer redacts the policy's secrets
    state.body = None  # not kept for the rest of the flow
    return None


def provider_credential(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    settings = settings_of(ctx)
    if settings is None:
        return None
    req = flow.request
    # The gateway's own key (key-auth) is never the provider's business, valid or not.
    names = {name for _, name in ctx.consumed_credentials}
    key_auth = ctx.match.route.route.key_auth
    if key_auth is not None:
        names.update(key_auth.key_names)
    for name in names:
        remove_key(req, name)
    headers.remove(req.headers, "proxy-authorization")
    state: LlmState | None = ctx.ai
    auth = auth_of(settings, state.target if state is not None else None)
    if auth is None:
        return None  # no stored key: the client's own provider key goes through
    if auth.header_name is not None:
        if not (auth.allow_override and headers.has_header(req.headers, auth.header_name)):
            headers.remove(req.headers, *PROVIDER_KEY_HEADERS, auth.header_name)
            headers.put(req.headers, auth.header_name, auth.header_value.reveal())
    if auth.param_name is not None:
        if not (auth.allow_override and auth.param_name in req.query):
            if auth.header_name is None:
                headers.remove(req.headers, *PROVIDER_KEY_HEADERS)
            req.query.set_all(auth.param_name, [auth.param_value.reveal()])
    return None


def set_endpoint(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """Gateway mode, after forwarding.forward: every request of the route goes to the route
    type's endpoint (Kong: the route type decides the upstream path, whatever the client's path)."""
    settings = settings_of(ctx)
    if settings is None or ctx.mode != "gateway" or not ctx.upstream_set or settings.targets:
        return None  # (a balanced route: balancer.apply_target)
    req = flow.request
    _, sep, query = req.path.partition("?")
    req.path = ctx.match.route.service.path + settings.endpoint + sep + query
    return None
