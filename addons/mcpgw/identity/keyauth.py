"""key-auth: identify the consumer by an API key (Kong's key-auth plugin, same settings and answers).

The key is looked up under each of `key_names` in turn, in the request headers (names are
case-insensitive) and then in the query string; the first name present decides. A name present
more than once (two headers, a header and a query parameter, or twice in the query) is refused
rather than guessed at. The key never reaches the upstream when `hide_credentials` is set, even
if it turned out to be wrong."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from mitmproxy import http

from .. import headers
from ..headers import header_values
from ..responses import json_response
from .consumers import ConsumerIndex, consumer_index
from .keyauth_settings import KeyAuthConfig
from .prm import is_metadata_request

if TYPE_CHECKING:
    from ..context import FlowContext

log = logging.getLogger("mcpgw.keyauth")


NO_KEY = "No API key found in request"
INVALID_KEY = "Unauthorized"
DUPLICATE_KEY = "Duplicate API key found"


class DuplicateKey(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _query_values(query: str, name: str) -> list[str]:
    values = []
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        if part and unquote_plus(key) == name:
            values.append(unquote_plus(value) if sep else "")
    return values


def _without_query_param(query: str, name: str) -> str:
    """The query string without `name`; every other parameter is kept byte for byte."""
    return "&".join(p for p in query.split("&") if p and unquote_plus(p.partition("=")[0]) != name)


def find_key(config: KeyAuthConfig, request: http.Request) -> tuple[str, str, str] | None:
    """(where, key name, key) for the first key name present: where is "header" or "query".
    Raises DuplicateKey when that name carries more than one value."""
    query = request.path.partition("?")[2]
    for name in config.key_names:
        found = []
        if config.key_in_header:
            found += [("header", name.lower(), v) for v in header_values(request.headers, name)]
        if config.key_in_query:
            found += [("query", name, v) for v in _query_values(query, name)]
        if len(found) > 1:
            raise DuplicateKey(name)
        if found:
            return found[0]
    return None


def remove_key(request: http.Request, name: str) -> None:
    """Remove every occurrence of key `name` from the headers and the query string."""
    headers.remove(request.headers, name)  # all of them, whatever their case
    path, sep, query = request.path.partition("?")
    if sep:
        remaining = _without_query_param(query, name)
        request.path = f"{path}?{remaining}" if remaining else path


def unauthorized(config: KeyAuthConfig, message: str) -> http.Response:
    challenge = f'Key realm="{config.realm}"' if config.realm else "Key"
    return json_response(401, {"message": message}, {"WWW-Authenticate": challenge})


def _refuse(ctx: "FlowContext", config: KeyAuthConfig, index: ConsumerIndex, message: str) -> http.Response | None:
    """Kong: with `anonymous`, every failure continues as that consumer; otherwise 401."""
    if config.anonymous is None:
        log.info("route %s: key-auth refused: %s", ctx.route_name, message)
        return unauthorized(config, message)
    name = index.find(config.anonymous, ("username", "id"))
    assert name is not None, "checked when the policy was loaded"
    ctx.identity = index.identity(name, "anonymous")
    log.debug("route %s: key-auth failed (%s); continuing as anonymous consumer %s", ctx.route_name, message, name)
    return None


def authenticate(ctx: "FlowContext", flow: http.HTTPFlow) -> http.Response | None:
    """The key-auth identity phase: set ctx.identity from the API key, or refuse with 401."""
    config = ctx.match.route.route.key_auth if ctx.match is not None else None
    request = flow.request
    if config is None or is_metadata_request(ctx, request):
        return None
    if request.method == "OPTIONS" and not config.run_on_preflight:
        return None
    if config.anonymous and ctx.identity is not None and ctx.identity.method != "anonymous":
        return None  # with anonymous, auth methods combine with OR (Kong): another one already succeeded
    index = consumer_index(ctx.snapshot.policy)
    try:
        found = find_key(config, request)
    except DuplicateKey as e:
        if config.hide_credentials:
            remove_key(request, e.name)
        return _refuse(ctx, config, index, DUPLICATE_KEY)
    if found is None:
        return _refuse(ctx, config, index, NO_KEY)
    where, name, key = found
    if config.hide_credentials:
        remove_key(request, name)
    identity = index.key_identity(key) if key else None
    if identity is None:
        return _refuse(ctx, config, index, INVALID_KEY if key else NO_KEY)
    ctx.identity = identity
    ctx.consumed_credentials.append((where, name))
    return None  # (no per-request log line: the flow comment and the audit record say who it was)
