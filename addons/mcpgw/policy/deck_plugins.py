"""Kong plugins of a decK file, as settings of native routes (see `deck` and docs/kong.md).

    key-auth                      -> key_auth
    ai-mcp-proxy                  -> acl (+ audit.log_payloads)
    ai-mcp-oauth2                 -> oauth (its PRM is served by the gateway)
    cors                          -> cors
    request-transformer(-advanced) -> credentials (mode: inject) or request_transform (deck_transformers)
    response-transformer-advanced -> prm rewrite of the route whose well-known path it serves
    datakit (the PRM challenge)   -> prm.challenge

Each family of plugins has its translator module (deck_access, deck_discovery, deck_oauth,
deck_transformers, deck_limits, deck_ai, deck_logging, deck_conversion, deck_validator); what they
share (the plugin table, `Plugin`, `RouteBuild`, problems, option readers) is deck_registry, which
imports none of them. This module runs them on each route in the gateway's fixed order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import deck_access, deck_ai, deck_conversion, deck_discovery, deck_limits, deck_logging, deck_oauth
from . import deck_transformers, deck_validator
from .deck_discovery import _discovery, _fold_prm_route
from .deck_registry import NATIVE_ORDER, RESPONSE_TRANSFORMER, RTA, RouteBuild, check_ordering

if TYPE_CHECKING:
    from .deck import Translator

# Each plugin's translator, run in NATIVE_ORDER (ai-mcp-proxy's is deck_conversion.translate, which
# hands passthrough-listener mode to deck_access).
HANDLERS = {**deck_access.HANDLERS, **deck_discovery.HANDLERS, "ai-mcp-oauth2": deck_oauth.translate,
            "openid-connect": deck_oauth.translate_oidc, **deck_limits.HANDLERS, **deck_ai.HANDLERS,
            **deck_logging.HANDLERS, **deck_conversion.HANDLERS, **deck_validator.HANDLERS}


def apply_plugins(builds: dict[str, RouteBuild], t: "Translator") -> None:
    for plugin in t.plugins:
        check_ordering(plugin, t.problems)
    for build in builds.values():
        if RESPONSE_TRANSFORMER in build.plugins:
            _fold_prm_route(build, builds, t)
    for build in builds.values():
        if build.folded:
            continue
        for plugin in build.personal:
            if plugin.name != RTA and not (plugin.name in deck_ai.PERSONAL and deck_ai.HANDLERS.keys() & build.plugins) \
                    and plugin.name not in deck_limits.PERSONAL:
                plugin.problem(t.problems, "plugins scoped to a consumer or consumer group are supported for "
                               "request-transformer-advanced only (as credentials overrides)")
        for name in NATIVE_ORDER:
            if name in build.plugins and name in HANDLERS:
                HANDLERS[name](build.plugins[name], build, t)
        deck_limits.personal_only(build, t)  # consumer(-group) rate limits with no route-level instance
        deck_transformers.translate_transformers(build, t)
        _discovery(build, t)
        if build.body_limits:
            acl = build.native.setdefault("acl", {})
            acl["max_request_body_size"] = min(build.body_limits)
        if not build.native["paths"]:
            t.problems.add((*build.loc, "paths"), "no path is left once the PRM location is served by the gateway")
