"""A route's forward proxy toward its service (`upstream_proxy`, Kong's `proxy_config`, with the
field names Kong's proxying plugins use: forward-proxy, ai-request-transformer), for what the
route sends there: forwarded requests (passthrough, upstream_proxy/forward.py) and REST tool calls
(rest_tools/call.py).

    upstream_proxy:
      https_proxy_host: proxy.internal   # for services on https
      https_proxy_port: 8080
      http_proxy_host: proxy.internal    # for services on http
      http_proxy_port: 3128
      auth_username: gateway             # Basic proxy authentication, sent to the proxy only
      auth_password: "{env://PROXY_PASSWORD}"

A service whose scheme has no proxy set is called directly, as in Kong. Only policy/base.py and
policy/secrets.py are imported: the policy model imports this module."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..policy.base import StrictModel
from ..policy.secrets import SecretValue

_PORT = {"ge": 1, "le": 65535}


class ProxySettings(StrictModel):
    """A forward proxy for a route's REST calls."""

    http_proxy_host: str | None = Field(None, min_length=1, description="Proxy for services on http")
    http_proxy_port: int | None = Field(None, **_PORT)
    https_proxy_host: str | None = Field(None, min_length=1, description="Proxy for services on https (CONNECT)")
    https_proxy_port: int | None = Field(None, **_PORT)
    proxy_scheme: Literal["http"] = Field("http", description="How the proxy is reached: http only, as in Kong")
    auth_username: str | None = Field(None, min_length=1, description="Basic authentication to the proxy")
    auth_password: SecretValue | None = Field(None, description="Its password; {env://...} references are resolved")

    @model_validator(mode="after")
    def _pairs(self) -> "ProxySettings":
        for kind in ("http", "https"):
            host, port = getattr(self, f"{kind}_proxy_host"), getattr(self, f"{kind}_proxy_port")
            if (host is None) != (port is None):
                raise ValueError(f"{kind}_proxy_host and {kind}_proxy_port go together")
            if host is not None and any(c in host for c in "/@:?# ") and not host.startswith("["):
                raise ValueError(f"{kind}_proxy_host is a host name or address, not a URL")
        if self.http_proxy_host is None and self.https_proxy_host is None:
            raise ValueError("a proxy needs http_proxy_host/port or https_proxy_host/port")
        if (self.auth_username is None) != (self.auth_password is None):
            raise ValueError("auth_username and auth_password go together")
        return self

    def address_for(self, scheme: str) -> tuple[str, int] | None:
        """The proxy's (host, port) for a service on `scheme`, or None: called directly."""
        host, port = (self.https_proxy_host, self.https_proxy_port) if scheme == "https" else \
            (self.http_proxy_host, self.http_proxy_port)
        return (host, port) if host is not None and port is not None else None

    def url_for(self, scheme: str) -> str | None:
        """The proxy's URL (no credentials) for a service on `scheme`, or None: called directly."""
        host, port = (self.https_proxy_host, self.https_proxy_port) if scheme == "https" else \
            (self.http_proxy_host, self.http_proxy_port)
        return f"{self.proxy_scheme}://{host}:{port}" if host is not None else None


def check_policy(policy: Any) -> None:
    """At load: one set of credentials per proxy address; no proxy where nothing would use it."""
    seen: dict[tuple[str, int], tuple[str, tuple[str | None, str | None]]] = {}
    for name, route in policy.routes.items():
        proxy = route.upstream_proxy
        if proxy is None:
            continue
        if route.ai is not None:
            raise ValueError(f"route {name!r}: upstream_proxy is not used on LLM routes (ai)")
        if route.rest_tools is not None and route.rest_tools.mode == "listener":
            raise ValueError(f"route {name!r}: a listener's calls go through the proxy of each tagged route, "
                             "not the listener's upstream_proxy")
        creds = (proxy.auth_username, proxy.auth_password.reveal() if proxy.auth_password is not None else None)
        for scheme in ("http", "https"):
            address = proxy.address_for(scheme)
            if address is None:
                continue
            other = seen.setdefault(address, (name, creds))
            if other[1] != creds:
                raise ValueError(f"routes {other[0]!r} and {name!r} use the proxy {address[0]}:{address[1]} with "
                                 "different credentials: give them one (a CONNECT does not say which route it serves)")
