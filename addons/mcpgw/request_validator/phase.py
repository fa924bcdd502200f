"""The request-validator phase (pipeline: REQUEST_PHASES, after identity, before route access, as
Kong's priorities order them: request-validator 999, below key-auth 1250, openid-connect 1050 and
ai-mcp-oauth2 1015, above acl 950 and ai-mcp-proxy 820). Kong's order of checks and answers:
parameters, then (with a body_schema) the content type, then the body of JSON requests, each
refused with 400 and Kong's {"message": ...}."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from ..policy.derived import PerPolicy
from ..responses import json_response
from .compile import Plan, compile_plan, is_json, media_allowed, parse_media_type

if TYPE_CHECKING:
    from ..context import FlowContext
    from ..policy.models import Policy

PARAM_MESSAGE = "request param doesn't conform to schema"
BODY_MESSAGE = "request body doesn't conform to schema"
TYPE_MESSAGE = "specified Content-Type is not allowed"
NOT_JSON = "request body is not valid JSON"


def _compile(policy: "Policy") -> dict[str, Plan]:
    return {name: compile_plan(route.request_validator) for name, route in policy.routes.items()
            if route.request_validator is not None}


_plans = PerPolicy(_compile)


def _refuse(message: Any) -> http.Response:
    return json_response(400, {"message": message})


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):  # the validator and the upstream could read different values
        raise ValueError("duplicate key")
    return found


def validate_request(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    if ctx.match is None or ctx.match.kind != "mcp":
        return None
    plan = _plans(ctx.snapshot.policy).get(ctx.match.name)
    if plan is None:
        return None
    verbose = plan.settings.verbose_response
    request = flow.request
    query = request.query.fields if plan.parameters else ()  # parsed once: each .query access parses again
    for p in plan.parameters:
        values = [v for k, v in query if k == p.name] if p.location == "query" else request.headers.get_all(p.name)
        error = p.judge(values)
        if error is not None:
            return _refuse(f"{p.location} '{p.name}' validation failed, [error] {error}" if verbose else PARAM_MESSAGE)
    if plan.body is None:
        return None
    types = request.headers.get_all("content-type")
    media = parse_media_type(types[0]) if len(types) == 1 else None  # none, several, or no media type: refused
    if media is None or not media_allowed(media, plan.allowed, plan.settings.content_type_parameter_validation):
        return _refuse(TYPE_MESSAGE if verbose else BODY_MESSAGE)
    if not is_json(media):
        return None  # Kong: other allowed types are forwarded unjudged
    try:
        # The bytes as sent, never decoded: Kong reads them so (a gzip body is not JSON), the JSON-RPC
        # parsing refuses any Content-Encoding, and decoding first would inflate a compression bomb.
        content = request.raw_content
        body = json.loads(content, object_pairs_hook=_no_duplicates) if content else {}
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), a repeated key, nesting too deep
        return _refuse(NOT_JSON)
    error = plan.body(body)
    if error is not None:
        return _refuse(error if verbose else BODY_MESSAGE)
    return None
