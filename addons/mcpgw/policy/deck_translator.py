"""The walk over a decK file's entities (`Translator`): top-level keys, services, routes and the
plugins declared on each (consumers and groups: deck_consumers), Kong's plugin precedence per
route, and each route's native settings before its plugins are applied (deck_plugins)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..canonical import host_of
from . import deck_conversion, deck_plugins, deck_registry
from .deck_consumers import ConsumerReader
from .deck_env import as_reference
from .deck_registry import Loc, Origin, Plugin, Problems, RouteBuild, Service, as_bool, as_int, known_fields


DECK_FORMAT = "3.0"
DENY_RESPONSES = ("jsonrpc", "http403")
TOP_LEVEL = ("_format_version", "_info", "_konnect", "consumer_groups", "consumers", "services", "routes", "plugins")
TOP_LEVEL_HINTS = {
    "upstreams": "no load balancing: point each service at one host (url, or host and port)",
    "targets": "no load balancing: point each service at one host (url, or host and port)",
    "vaults": "the built-in env vault ({vault://env/NAME}) needs no vault entity; other vaults are not supported",
    "certificates": "TLS termination is configured on mitmproxy's listener (--certs), not in the policy",
    "ca_certificates": "upstream TLS verification is a mitmproxy option (ssl_verify_upstream_trusted_ca)",
    "snis": "TLS termination is configured on mitmproxy's listener (--certs), not in the policy",
}
SERVICE_FIELDS = ("name", "id", "url", "host", "port", "protocol", "path", "tags", "enabled", "connect_timeout",
                  "read_timeout", "write_timeout", "retries", "routes", "plugins")
SERVICE_HINTS = {name: "upstream TLS settings are mitmproxy options (ssl_insecure, ssl_verify_upstream_trusted_ca)"
                 for name in ("tls_verify", "tls_verify_depth", "ca_certificates", "client_certificate")}
ROUTE_FIELDS = ("name", "id", "paths", "strip_path", "methods", "protocols", "hosts", "preserve_host",
                "request_buffering", "response_buffering", "tags", "regex_priority", "path_handling",
                "https_redirect_status_code", "plugins", "service")
ROUTE_HINTS = {name: "native routes match on path and method only" for name in (
    "headers", "snis", "sources", "destinations", "expression", "priority")}
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class DeckSettings:
    """Gateway options that change what a decK file becomes (`--set mcp_deck_deny=...`): Kong's
    behaviour differs between versions where the file cannot say which one it was written for."""

    deny_response: str = "jsonrpc"  # ai-mcp-proxy denials: -32602 (Kong < 3.14, the recipe's) or HTTP 403 (3.14+)

    def __post_init__(self) -> None:
        if self.deny_response not in DENY_RESPONSES:
            raise ValueError(f"mcp_deck_deny must be one of {', '.join(DENY_RESPONSES)}, not {self.deny_response!r}")

    def fingerprint(self) -> bytes:
        """Part of a decK policy's digest: the same file under other settings is another policy."""
        return b"" if self == DeckSettings() else f"\0deck:deny_response={self.deny_response}".encode()


# -- the file's entities -----------------------------------------------------------------------------


@dataclass
class Route:
    name: str
    service: str
    loc: Loc
    fields: dict[str, Any]
    hosts: tuple[str, ...] = ()


@dataclass
class Translator(ConsumerReader):
    problems: Problems
    secret_references: bool = False
    settings: DeckSettings = field(default_factory=DeckSettings)
    groups: list[str] = field(default_factory=list)
    consumers: dict[str, dict[str, Any]] = field(default_factory=dict)
    consumer_ids: dict[str, str] = field(default_factory=dict)  # username, id or custom_id -> username
    services: dict[str, Service] = field(default_factory=dict)
    disabled_services: set[str] = field(default_factory=set)
    disabled_routes: set[str] = field(default_factory=set)
    refused_routes: dict[str, Loc] = field(default_factory=dict)  # name -> where the route was refused
    routes: list[Route] = field(default_factory=list)
    plugins: list[Plugin] = field(default_factory=list)
    origins: dict[Loc, Origin] = field(default_factory=dict)  # native location -> decK location, for errors
    mcp_plugin_tags: dict[Loc, list[str]] = field(default_factory=dict)  # ai-mcp-proxy tags (deck_conversion)
    listener_routes: set[str] = field(default_factory=set)  # routes an ai-mcp-proxy listener runs on

    def secret(self, value: Any) -> Any:
        return as_reference(value) if self.secret_references else value

    # entities

    def read(self, data: dict[str, Any]) -> None:
        for key in data:
            if key not in TOP_LEVEL:
                hint = TOP_LEVEL_HINTS.get(key, f"supported top-level keys: {', '.join(TOP_LEVEL)}")
                self.problems.add((key,), f"not supported ({hint})")
        version = str(data.get("_format_version"))
        if version != DECK_FORMAT:
            self.problems.add(("_format_version",), f"decK format {version!r} is not supported: only {DECK_FORMAT!r} "
                              "(Kong 3.x); convert older files with `deck file convert`")
        self._read_info(data.get("_info"))
        self.mcp_plugin_tags, self.listener_routes = deck_conversion.scan(data)  # before routes: serviceless listeners
        for i, group in enumerate(self._list(data, "consumer_groups")):
            self._read_group(group, ("consumer_groups", i))
        for i, consumer in enumerate(self._list(data, "consumers")):
            self._read_consumer(consumer, ("consumers", i))
        for i, service in enumerate(self._list(data, "services")):
            self._read_service(service, ("services", i))
        for i, route in enumerate(self._list(data, "routes")):
            self._read_route(route, ("routes", i), None)
        for i, plugin in enumerate(self._list(data, "plugins")):
            self._add_plugin(plugin, ("plugins", i), {})

    def _list(self, data: dict[str, Any], key: str, loc: Loc = ()) -> list[Any]:
        value = data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problems.add((*loc, key), "expected a list")
            return []
        return value

    def _mapping(self, value: Any, loc: Loc) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.problems.add(loc, "expected a mapping")
        return None

    def _read_info(self, info: Any) -> None:
        if info is None or (info := self._mapping(info, ("_info",))) is None:
            return
        for key, value in info.items():
            if key != "select_tags":
                self.problems.add(("_info", key), "not supported: _info takes select_tags only")
            elif not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                self.problems.add(("_info", key), "expected a list of tags")

    def _read_service(self, service: Any, loc: Loc) -> None:
        if (service := self._mapping(service, loc)) is None:
            return
        known_fields(service, loc, SERVICE_FIELDS, "service", self.problems, SERVICE_HINTS)
        name = service.get("name") or f"service-{loc[-1]}"
        if name in self.services or name in self.disabled_services:
            self.problems.add(loc, f"service {name!r} is declared twice")
        if not as_bool(service.get("enabled", True), (*loc, "enabled"), self.problems):
            self.disabled_services.add(name)  # Kong does not route to it: neither do its routes here
            return
        for k in ("connect_timeout", "read_timeout", "write_timeout", "retries"):  # accepted; see docs/kong.md
            if service.get(k) is not None:
                as_int(service[k], (*loc, k), self.problems)
        self.services[name] = Service(name, loc, self._service_url(service, loc))
        self.origins[("services", name)] = Origin(loc)
        for i, plugin in enumerate(self._list(service, "plugins", loc)):
            self._add_plugin(plugin, (*loc, "plugins", i), {"service": name})
        for i, route in enumerate(self._list(service, "routes", loc)):
            self._read_route(route, (*loc, "routes", i), name)

    def _service_url(self, service: dict[str, Any], loc: Loc) -> str | None:
        if service.get("url") is not None:
            if any(service.get(k) is not None for k in ("host", "port", "protocol", "path")):
                self.problems.add(loc, "give either url or host/port/protocol/path, not both")
            return str(service["url"])
        host = service.get("host")
        if not isinstance(host, str) or not host:
            self.problems.add(loc, "a service needs url, or host (with port, protocol and path)")
            return None
        protocol = str(service.get("protocol") or "http").lower()
        if protocol not in DEFAULT_PORTS:
            self.problems.add((*loc, "protocol"), f"protocol {protocol!r} is not supported: MCP servers are reached "
                              "over http or https")
            return None
        port = as_int(service.get("port", 80), (*loc, "port"), self.problems)  # Kong's default is 80 for both
        path = service.get("path") or ""
        if path and not str(path).startswith("/"):
            self.problems.add((*loc, "path"), "a service path must start with '/'")
        try:
            ipaddress.IPv6Address(host)
            host = f"[{host}]"
        except ValueError:
            pass
        netloc = host if port == DEFAULT_PORTS[protocol] else f"{host}:{port}"
        return f"{protocol}://{netloc}{path}"

    def _read_route(self, route: Any, loc: Loc, service: str | None) -> None:
        if (route := self._mapping(route, loc)) is None:
            return
        known_fields(route, loc, ROUTE_FIELDS if service is None else ROUTE_FIELDS[:-1], "route", self.problems,
                     ROUTE_HINTS)
        if service is None:
            ref = route.get("service")
            service = ref.get("name") if isinstance(ref, dict) else ref
            if (not isinstance(service, str) or not service) and route.get("name") in self.listener_routes:
                service = deck_conversion.listener_service(self, route["name"], loc)  # it answers itself
            if not isinstance(service, str) or not service:
                self.problems.add(loc, "a route needs a service (service: NAME): a route without one forwards nowhere")
                self._refused(route, loc)
                return
        if service in self.disabled_services:
            self.disabled_routes.add(route.get("name") or f"{service}-{loc[-1]}")
            return
        if service not in self.services:
            self.problems.add((*loc, "service"), f"service {service!r} is not defined")
            self._refused(route, loc)
            return
        name = route.get("name") or f"{service}-{loc[-1]}"
        if any(r.name == name for r in self.routes):
            self.problems.add(loc, f"route name {name!r} is used twice")
        built = Route(name, service, loc, route)
        self.routes.append(built)
        for i, plugin in enumerate(self._list(route, "plugins", loc)):
            self._add_plugin(plugin, (*loc, "plugins", i), {"route": name, "service": service})

    def _refused(self, route: dict[str, Any], loc: Loc) -> None:
        """Remember a refused route by name: plugins naming it are then not reported as naming an
        undefined route (it is defined; the file says why it was refused)."""
        if isinstance(route.get("name"), str):
            self.refused_routes.setdefault(route["name"], loc)

    def _add_plugin(self, entry: Any, loc: Loc, scope: dict[str, str]) -> None:
        if (entry := self._mapping(entry, loc)) is None:
            return
        plugin = deck_registry.read_plugin(entry, loc, scope, self.problems)
        if plugin is not None:
            plugin.index = len(self.plugins)
            self.plugins.append(plugin)

    # scopes

    def resolve_scopes(self) -> None:
        """Scope names of top-level plugins must exist; plugins of disabled services go with them."""
        kept, told = [], set()
        for plugin in self.plugins:
            scope = plugin.scope
            if scope.get("service") in self.disabled_services or scope.get("route") in self.disabled_routes:
                continue
            if "service" in scope and scope["service"] not in self.services:
                self.problems.add(plugin.loc, f"service {scope['service']!r} is not defined", name=plugin.name)
                continue
            if "route" in scope and not any(r.name == scope["route"] for r in self.routes):
                refused = self.refused_routes.get(scope["route"])
                if refused is None:
                    self.problems.add(plugin.loc, f"route {scope['route']!r} is not defined", name=plugin.name)
                elif scope["route"] not in told:  # said once, at the first plugin naming it
                    told.add(scope["route"])
                    self.problems.add(plugin.loc, f"route {scope['route']!r} was refused at {self.problems.where(refused)}"
                                      ": the plugins naming it are checked once it loads", name=plugin.name)
                continue
            if "consumer" in scope:
                if scope["consumer"] not in self.consumer_ids:
                    self.problems.add(plugin.loc, f"consumer {scope['consumer']!r} is not defined", name=plugin.name)
                    continue
                scope["consumer"] = self.consumer_ids[scope["consumer"]]
            if "consumer_group" in scope and scope["consumer_group"] not in self.groups:
                self.problems.add(plugin.loc, f"consumer group {scope['consumer_group']!r} is not declared",
                                  name=plugin.name)
                continue
            kept.append(plugin)
        self.plugins = kept

    def plugins_of(self, route: Route) -> tuple[dict[str, Plugin], list[Plugin]]:
        """Kong's precedence for one route: per plugin name the most specific instance among route,
        service and global ones; consumer and consumer-group scoped instances separately."""
        chosen: dict[str, Plugin] = {}
        personal: list[Plugin] = []
        for plugin in self.plugins:
            scope = plugin.scope
            if scope.get("route", route.name) != route.name or scope.get("service", route.service) != route.service:
                continue
            if "consumer" in scope or "consumer_group" in scope:
                personal.append(plugin)
                continue
            current = chosen.get(plugin.name)
            if current is None or plugin.rank > current.rank:
                chosen[plugin.name] = plugin
            elif plugin.rank == current.rank:
                self.problems.add(plugin.loc, f"a second {plugin.name} plugin at the same level as "
                                  f"{self.problems.where(current.loc)}; Kong allows one per scope", name=plugin.name)
        return chosen, personal

    # routes

    def build_routes(self) -> dict[str, RouteBuild]:
        self.resolve_scopes()
        builds: dict[str, RouteBuild] = {}
        for route in self.routes:
            native = self._route_settings(route)
            if native is None:
                continue
            chosen, personal = self.plugins_of(route)
            builds[route.name] = RouteBuild(route.name, route.service, route.loc, native, chosen, personal,
                                            self.services[route.service].url)
            self.origins[("routes", route.name)] = Origin(route.loc)
        self._check_hosts()
        deck_plugins.apply_plugins(builds, self)
        return {name: build for name, build in builds.items() if not build.folded}

    def _route_settings(self, route: Route) -> dict[str, Any] | None:
        fields, loc, problems = route.fields, route.loc, self.problems
        paths = fields.get("paths")
        if paths is None:
            paths = ["/"]  # Kong: a route without paths matches every path
        if not isinstance(paths, list) or not paths:
            problems.add((*loc, "paths"), "expected a list of paths")
            return None
        for i, p in enumerate(paths):
            if not isinstance(p, str) or not p.startswith("/"):
                regex = isinstance(p, str) and p.startswith("~")
                hint = " (regex paths, starting with '~', are not supported)" if regex else ""
                problems.add((*loc, "paths", i), f"a path must be a plain prefix starting with '/'{hint}")
        native: dict[str, Any] = {"service": route.service, "paths": [str(p) for p in paths]}
        if not as_bool(fields.get("strip_path", True), (*loc, "strip_path"), problems):
            native["strip_path"] = False
        methods = fields.get("methods")
        if methods is not None and not (isinstance(methods, list) and all(isinstance(m, str) for m in methods)):
            problems.add((*loc, "methods"), "expected a list of HTTP methods")
        elif methods is not None:
            native["methods"] = [m.upper() for m in methods]
        protocols = fields.get("protocols")
        if protocols is not None and (not isinstance(protocols, list) or not set(protocols) <= {"http", "https"}):
            problems.add((*loc, "protocols"), f"only http and https routes are supported, got {protocols!r}")
        if as_bool(fields.get("preserve_host", False), (*loc, "preserve_host"), problems):
            problems.add((*loc, "preserve_host"), "not supported: the upstream always receives its service's host")
        if fields.get("path_handling", "v0") != "v0":
            problems.add((*loc, "path_handling"), "only path_handling v0 (Kong's default) is supported")
        for key in ("request_buffering", "response_buffering"):
            as_bool(fields.get(key, True), (*loc, key), problems)  # no effect: streams are never buffered
        hosts = fields.get("hosts")
        if hosts is not None:
            if not isinstance(hosts, list) or not all(isinstance(h, str) and h and "*" not in h for h in hosts):
                problems.add((*loc, "hosts"), "expected a list of host names (wildcards are not supported)")
            else:
                route.hosts = tuple(sorted({host_of(h) for h in hosts}))
        return native

    def _check_hosts(self) -> None:
        """Native routes match on path alone and are served on every public host of the gateway.
        That reproduces Kong's host matching when every route that names hosts names the same
        ones: they become the gateway's hosts. Anything finer is refused."""
        sets = {route.hosts for route in self.routes if route.hosts}
        if len(sets) > 1:
            for route in self.routes:
                if route.hosts:
                    self.problems.add((*route.loc, "hosts"), "routes name different hosts; native routes match on path "
                                      "only, so every route that names hosts must name the same ones")

    @property
    def hosts(self) -> list[str]:
        return sorted({h for route in self.routes for h in route.hosts})
