"""decK translation of ai-mcp-oauth2 into a route's native `oauth` (identity/oauth.py), including
`token_exchange` (identity/exchange.py) and `claim_to_header` / `upstream_headers`
(identity/claim_headers.py). Kong's dumps spell every option out, unset ones as null: nulls and
empty lists are dropped before anything is judged."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .deck_registry import WELL_KNOWN, Plugin, RouteBuild, as_int, take_options

if TYPE_CHECKING:
    from .deck import Translator

OAUTH_OPTIONS = ("resource", "authorization_servers", "metadata_endpoint", "scopes_supported", "jwks_endpoint",
                 "jwks_cache_ttl", "jwt_claims_leeway", "introspection_endpoint", "client_id", "client_secret",
                 "client_auth", "cache_introspection", "consumer_claim", "consumer_by", "consumer_optional",
                 "consumer_groups_claim", "consumer_groups_optional", "credential_claim", "passthrough_credentials",
                 "insecure_relaxed_audience_validation", "ssl_verify", "timeout", "max_request_body_size",
                 "claim_to_header", "upstream_headers", "token_exchange", "metadata_cache_ttl")
EXCHANGE_OPTIONS = ("enabled", "token_endpoint", "client_auth", "client_id", "client_secret", "request", "cache")
EXCHANGE_REQUEST_OPTIONS = ("subject_token_type", "requested_token_type", "audience", "resource", "scopes",
                            "actor_token_source", "actor_token_header", "actor_token", "actor_token_type")
EXCHANGE_CACHE_OPTIONS = ("enabled", "ttl")


def _set(value: Any) -> bool:
    return value is not None and value != [] and value != {}


def _section(plugin: Plugin, t: "Translator", value: Any, known: tuple[str, ...], *where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        plugin.problem(t.problems, "expected a mapping", "config", *where)
        return {}
    out = {}
    for key, item in value.items():
        if not _set(item):
            continue
        if key not in known:
            plugin.problem(t.problems, f"option not supported by this gateway (supported: {', '.join(known)})",
                           "config", *where, key)
            continue
        out[key] = item
    return out


def _token_exchange(plugin: Plugin, t: "Translator", config: dict[str, Any]) -> dict[str, Any] | None:
    te = _section(plugin, t, config["token_exchange"], EXCHANGE_OPTIONS, "token_exchange")
    if not te.get("enabled", False):  # Kong's default: disabled
        return None
    if not config.get("passthrough_credentials"):
        # Kong's own rule (its token-exchange page); here the exchanged token, never the caller's, is passed.
        plugin.problem(t.problems, "passthrough_credentials must be true when token_exchange is enabled (as in Kong); "
                       "the upstream receives the exchanged token, never the caller's", "config", "passthrough_credentials")
    te.setdefault("client_auth", "client_secret_basic")  # Kong's default (the native default is the same)
    if "client_secret" in te:
        te["client_secret"] = t.secret(te["client_secret"])
    if "request" in te:
        te["request"] = _section(plugin, t, te["request"], EXCHANGE_REQUEST_OPTIONS, "token_exchange", "request")
        if "actor_token" in te["request"]:
            te["request"]["actor_token"] = t.secret(te["request"]["actor_token"])
    if "cache" in te:
        te["cache"] = _section(plugin, t, te["cache"], EXCHANGE_CACHE_OPTIONS, "token_exchange", "cache")
    return te


def translate(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    config = {k: v for k, v in take_options(plugin, OAUTH_OPTIONS, t.problems).items() if _set(v)}
    # Neither jwks_endpoint nor introspection_endpoint: the JWKS from the authorization server's
    # metadata, as Kong does (identity/discovery.py).
    if "timeout" in config:
        config["timeout"] = as_int(config["timeout"], (*plugin.loc, "config", "timeout"), t.problems) / 1000  # ms -> s
    if "client_secret" in config:
        config["client_secret"] = t.secret(config["client_secret"])
    if "token_exchange" in config:
        exchange = _token_exchange(plugin, t, config)
        if exchange is None:
            del config["token_exchange"]
        else:
            config["token_exchange"] = exchange
    if "max_request_body_size" in config:
        limit = as_int(config.pop("max_request_body_size"), (*plugin.loc, "config", "max_request_body_size"),
                       t.problems)
        if limit:
            build.body_limits.append(limit)
    endpoint = config.pop("metadata_endpoint", None)
    paths = build.native["paths"]
    locations = {WELL_KNOWN + p.rstrip("/") for p in paths if not p.startswith(WELL_KNOWN + "/")}
    if endpoint is not None and endpoint not in locations:
        plugin.problem(t.problems, f"the gateway serves this route's PRM at {', '.join(sorted(locations))} (RFC 9728); "
                       "set metadata_endpoint to that or leave it out", "config", "metadata_endpoint")
    elif endpoint in paths:
        paths.remove(endpoint)  # served by the gateway itself, before any authentication
    if isinstance(config.get("resource"), str):
        build.public_urls.append(config["resource"])
    build.native["oauth"] = config
    build.origin(t, "oauth", plugin)


# -- openid-connect, as far as it is a resource server ----------------------------------------------

OIDC_OPTIONS = ("issuer", "auth_methods", "client_id", "client_secret", "client_auth", "bearer_token_param_type",
                "introspection_endpoint", "audience_required", "consumer_claim", "consumer_by", "consumer_optional",
                "consumer_groups_claim", "consumer_groups_optional", "credential_claim", "hide_credentials",
                "ssl_verify", "timeout", "jwks_endpoint", "scopes_required", "scopes_claim", "authenticated_groups_claim",
                "groups_required", "groups_claim", "roles_required", "roles_claim", "audience_claim")
RESOURCE_SERVER_METHODS = ("bearer", "introspection")
# Kong's other auth_methods log a user in or get a token for the gateway itself: not a resource server's job.
SESSION_METHODS = ("authorization_code", "session", "password", "client_credentials", "refresh_token",
                   "userinfo", "kong_oauth2")


def _one(plugin: Plugin, t: "Translator", config: dict[str, Any], key: str) -> Any:
    """openid-connect takes lists for the client settings; the gateway has one client."""
    value = config.get(key)
    if isinstance(value, list):
        if len(value) != 1:
            plugin.problem(t.problems, "exactly one value is supported (the gateway has one client)", "config", key)
            return None
        return value[0]
    return value


def _audiences(plugin: Plugin, t: "Translator", config: dict[str, Any], native: dict[str, Any]) -> None:
    """audience_required (Kong's AND/OR entries) read from audience_claim (default [aud]); one URL
    alone is also the native `resource`, the one the route's PRM names. Without
    audience_required openid-connect checks no audience, and audience_claim changes nothing."""
    audiences = config.get("audience_required")
    if audiences is None:
        native["insecure_relaxed_audience_validation"] = True
        return
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        plugin.problem(t.problems, "expected a list of audiences", "config", "audience_required")
        return
    native["audience_required"] = audiences
    if config.get("audience_claim", ["aud"]) != ["aud"]:
        native["audience_claim"] = config["audience_claim"]
    one = audiences[0].split() if len(audiences) == 1 else []
    if len(one) == 1 and urlsplit(one[0]).scheme in ("http", "https"):  # an audience such as "account" names no URL
        native["resource"] = one[0]


def translate_oidc(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    """openid-connect on an MCP route -> the native OAuth resource server: bearer JWTs checked with
    the issuer's JWKS (from its discovery document) or introspection; audience and consumer mapping."""
    if "ai-mcp-oauth2" in build.plugins:
        plugin.problem(t.problems, "a route takes one of ai-mcp-oauth2 or openid-connect, not both")
        return
    config = {k: v for k, v in take_options(plugin, OIDC_OPTIONS, t.problems).items() if _set(v)}
    issuer = config.get("issuer")
    if not isinstance(issuer, str):
        plugin.problem(t.problems, "issuer is required (the gateway reads the JWKS or introspection endpoint from "
                       "its discovery document)", "config", "issuer")
        return
    methods = config.get("auth_methods")
    if not isinstance(methods, list):
        plugin.problem(t.problems, "set auth_methods to [bearer] or [introspection]: Kong's default includes the "
                       "browser and password flows, which need a session an MCP route does not have", "config", "auth_methods")
        return
    browser = [m for m in methods if m in SESSION_METHODS]
    if browser:
        plugin.problem(t.problems, f"{', '.join(browser)} is not supported on an MCP route: these flows log a user "
                       "in with a browser session or get a token for the gateway; an MCP route is a resource server "
                       "that validates the bearer token the client sends (bearer, introspection)", "config", "auth_methods")
    chosen = [m for m in methods if m in RESOURCE_SERVER_METHODS]
    unknown = [m for m in methods if m not in RESOURCE_SERVER_METHODS and m not in SESSION_METHODS]
    if unknown:
        plugin.problem(t.problems, f"unknown auth_methods {unknown}", "config", "auth_methods")
    if len(chosen) != 1:
        plugin.problem(t.problems, "choose one of bearer (JWT by the issuer's JWKS) or introspection", "config",
                       "auth_methods")
        return
    if config.get("bearer_token_param_type", ["header"]) != ["header"]:
        plugin.problem(t.problems, "only header is supported: a token in the query string or body would be logged "
                       "and cached on the way", "config", "bearer_token_param_type")
    native: dict[str, Any] = {"authorization_servers": [issuer], "issuer": issuer}
    if chosen == ["introspection"]:
        client_id, secret = _one(plugin, t, config, "client_id"), _one(plugin, t, config, "client_secret")
        auth = _one(plugin, t, config, "client_auth") or "client_secret_basic"
        if auth not in ("client_secret_basic", "client_secret_post"):
            plugin.problem(t.problems, "client_secret_basic or client_secret_post is supported", "config", "client_auth")
        native |= {"client_id": client_id, "client_secret": t.secret(secret), "client_auth": auth}
        if "introspection_endpoint" in config:
            native["introspection_endpoint"] = config["introspection_endpoint"]
        else:
            native["discover_introspection"] = True
    elif "jwks_endpoint" in config:
        native["jwks_endpoint"] = config["jwks_endpoint"]
    _audiences(plugin, t, config, native)
    for key in ("consumer_claim", "consumer_by", "consumer_optional", "consumer_groups_claim",
                "consumer_groups_optional", "credential_claim", "ssl_verify", "scopes_required", "scopes_claim",
                "authenticated_groups_claim", "groups_required", "groups_claim", "roles_required", "roles_claim"):
        if key in config:
            native[key] = config[key]
    if "timeout" in config:
        native["timeout"] = as_int(config["timeout"], (*plugin.loc, "config", "timeout"), t.problems) / 1000
    native["passthrough_credentials"] = not config.get("hide_credentials", False)  # Kong's default: forwarded
    build.native["oauth"] = native
    build.origin(t, "oauth", plugin)
