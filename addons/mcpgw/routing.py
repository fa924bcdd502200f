"""Which route governs a request, and where it goes upstream.

Gateway mode matches the request path against route prefixes (longest first, Kong's plain prefix
semantics) and also answers the RFC 9728 well-known path of each route. Intercept mode matches the
request's origin and path against each service URL, so one policy governs both modes. Paths are
matched in their canonical form (canonical.py); which origin a request is for, whatever name it
used, is destinations.py's business."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: the policy model's load-time checks build on routing (rest_tools.catalog)
    from .policy.models import Policy, Route, Service

PRM_PREFIX = "/.well-known/oauth-protected-resource"

Origin = tuple[str, str, int]  # (scheme, host as in the service URL, lower-case, port)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    name: str
    route: Route
    service: Service


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: CompiledRoute
    # prm: a route's RFC 9728 metadata path (gateway mode: served by the gateway; intercept mode:
    # the upstream's own document, for GET/HEAD/preflight only, see identity/prm.py)
    kind: Literal["mcp", "prm"]
    prefix: str | None  # the matched gateway prefix; None in intercept mode

    @property
    def name(self) -> str:
        return self.route.name


def literal_host(host: str) -> str:
    """A host name as origins are keyed: lower-case, without a trailing dot or IPv6 brackets."""
    return host.lower().rstrip(".").strip("[]")


def origin_of(service: Service) -> Origin:
    return (service.scheme, literal_host(service.host), service.port)


def _split(path: str) -> tuple[str, str]:
    path_only, sep, query = path.partition("?")
    return path_only, sep + query


def _join(base: str, rest: str) -> str:
    if not rest:
        return base or "/"
    if not base:
        return rest if rest.startswith("/") else "/" + rest
    return base + (rest if rest.startswith("/") else "/" + rest)


def _llm_endpoint(route: CompiledRoute) -> str | None:
    """An LLM route's endpoint under its service URL (docs/ai.md); None for an MCP route."""
    ai = getattr(route.route, "ai", None)
    return ai.endpoint if ai is not None else None


class RouteTable:
    """Compiled once per policy version; lookups are a short scan of sorted prefixes."""

    def __init__(self, policy: Policy):
        routes = [CompiledRoute(n, r, policy.services[r.service]) for n, r in policy.routes.items()]
        self.routes = {r.name: r for r in routes}
        prefixes = [(p, r) for r in routes for p in r.route.paths]
        self._gateway = sorted(prefixes, key=lambda pr: len(pr[0]), reverse=True)
        self._prm = sorted(((PRM_PREFIX + p.rstrip("/"), r) for p, r in prefixes), key=lambda pr: len(pr[0]), reverse=True)
        by_origin: dict[Origin, list[CompiledRoute]] = {}
        for r in routes:  # first route per service URL wins: file order is the tie-break
            key = origin_of(r.service)
            # (LLM routes of one provider URL with different endpoints, chat and Responses, are both kept)
            if not any(o.service.url == r.service.url and _llm_endpoint(o) == _llm_endpoint(r)
                       for o in by_origin.get(key, [])):
                by_origin.setdefault(key, []).append(r)
        for lst in by_origin.values():
            lst.sort(key=lambda r: len(r.service.path), reverse=True)
        self._intercept = by_origin
        # Intercept mode: each route's exact RFC 9728 path on its own origin (the service root's is the bare prefix)
        self._intercept_prm = {key: {PRM_PREFIX + r.service.path: r for r in lst} for key, lst in by_origin.items()}
        self.origins: tuple[Origin, ...] = tuple(by_origin)  # in file order
        self.governed_ports = frozenset((scheme, port) for scheme, _, port in by_origin)

    def match_gateway(self, path: str) -> RouteMatch | None:
        path_only, _ = _split(path)
        if path_only.startswith(PRM_PREFIX + "/"):
            for prefix, route in self._prm:
                if path_only == prefix or path_only == prefix + "/":
                    return RouteMatch(route, "prm", prefix)
        for prefix, route in self._gateway:
            if path_only.startswith(prefix):
                return RouteMatch(route, "mcp", prefix)
        return None

    def governs(self, origin: Origin) -> bool:
        return origin in self._intercept

    def match_origin(self, origin: Origin, path: str) -> RouteMatch | None:
        """Intercept mode: the route of a governed origin covering `path` (canonical), if any.
        A route's exact PRM path is a "prm" match; the service URL and what is under it, "mcp"."""
        path_only, _ = _split(path)
        prm_route = self._intercept_prm.get(origin, {}).get(path_only)
        if prm_route is not None:
            return RouteMatch(prm_route, "prm", None)
        covering = None
        for route in self._intercept.get(origin, ()):
            base = route.service.path
            if not base or path_only == base or path_only.startswith(base + "/"):
                endpoint = _llm_endpoint(route)
                if endpoint is None or path_only == base + endpoint:
                    return RouteMatch(route, "mcp", None)
                covering = covering or route  # an LLM route, another endpoint: the one it answers 404 for
        return RouteMatch(covering, "mcp", None) if covering is not None else None

    def match_intercept(self, scheme: str, host: str, port: int, path: str) -> RouteMatch | None:
        """match_origin for the origin a request names literally (no resolution)."""
        return self.match_origin((scheme, literal_host(host), port), path)

    @staticmethod
    def upstream_path(match: RouteMatch, path: str) -> str:
        """The upstream request target for a gateway-mode request (query string kept)."""
        path_only, query = _split(path)
        svc = match.route.service
        if match.route.route.strip_path and match.prefix is not None:
            rest = path_only[len(match.prefix):]
        else:
            rest = path_only
        return _join(svc.path, rest) + query

    @staticmethod
    def gateway_path(match: RouteMatch, upstream_path: str) -> str | None:
        """Inverse of upstream_path, for URLs the upstream hands out (the legacy SSE `endpoint`).
        None when the upstream path is outside what this route can reach."""
        path_only, query = _split(upstream_path)
        svc_path = match.route.service.path
        if match.prefix is None:
            return upstream_path
        if svc_path and not (path_only == svc_path or path_only.startswith(svc_path + "/")):
            return None
        rest = path_only[len(svc_path):]
        if match.route.route.strip_path:
            return _join(match.prefix.rstrip("/"), rest) + query
        return path_only + query if path_only.startswith(match.prefix) else None
