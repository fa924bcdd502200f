"""ai-mcp-proxy's `proxy_config` (decK's ai2kong output) as the route's native `upstream_proxy`
(upstream_proxy/settings.py), in every mode that sends to the route's service: passthrough-listener
(forwarded requests) and the conversion modes (REST calls). The fields keep the names of Kong's
proxying plugins; their values are checked by the native model; other keys are refused."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .deck_registry import Plugin, RouteBuild

if TYPE_CHECKING:
    from .deck import Translator

PROXY_OPTIONS = ("http_proxy_host", "http_proxy_port", "https_proxy_host", "https_proxy_port", "proxy_scheme",
                 "auth_username", "auth_password")


def proxy_config(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    config = plugin.config.get("proxy_config")
    if config is None:
        return
    if not isinstance(config, dict):
        plugin.problem(t.problems, "expected a mapping", "config", "proxy_config")
        return
    for key in config:
        if key not in PROXY_OPTIONS:
            plugin.problem(t.problems, f"option not supported by this gateway (supported: {', '.join(PROXY_OPTIONS)})",
                           "config", "proxy_config", key)
    native = {k: t.secret(v) if k == "auth_password" else v for k, v in config.items()
              if k in PROXY_OPTIONS and v is not None}
    if native:
        build.native["upstream_proxy"] = native
        build.origin(t, "upstream_proxy", plugin)
