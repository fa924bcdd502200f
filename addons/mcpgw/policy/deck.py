"""Kong decK files as policies.

A policy file with `_format_version` is a decK state file (format 3.0). It is translated into the
native policy on every load and reload, then validated like one; `scripts/deck2policy` prints the
translation. decK's `${{ env "DECK_NAME" }}` is substituted first, on the parsed values; Kong
vault references (`{vault://env/NAME}`) pass through and are resolved by `policy.secrets` where
the native model takes secrets.

Entities map one to one (consumer groups, consumers with their keys, services, routes); plugins
are resolved per route as Kong does (route over service over global, consumer-scoped ones apart)
and each becomes a setting of the native route (`deck_plugins`). Anything that cannot be
reproduced is refused with one message per item, naming its place in the file: an ignored
security plugin would be a hole. docs/kong.md lists what is supported and what it becomes."""

from __future__ import annotations

import ipaddress
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from ..canonical import host_of
from . import deck_conversion, deck_limits, deck_plugins, deck_registry, deck_vault
from .deck_registry import Loc, Origin, Plugin, Problems, RouteBuild, as_bool, as_int, known_fields

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
CONSUMER_FIELDS = ("username", "custom_id", "id", "tags", "keyauth_credentials", "groups", "plugins", "acls")
ACL_FIELDS = ("group", "id", "tags", "created_at")
CREDENTIAL_HINT = "only keyauth_credentials (key-auth) are supported"
CONSUMER_HINTS = {name: CREDENTIAL_HINT for name in (
    "basicauth_credentials", "jwt_secrets", "hmacauth_credentials", "oauth2_credentials", "mtls_auth_credentials")}
KEY_FIELDS = ("key", "id", "tags", "created_at")
GROUP_FIELDS = ("name", "id", "tags", "plugins")
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
_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.S)
_ENV_CALL = re.compile(r'\s*env\s+"([^"]*)"\s*', re.S)


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


_KONG_ENTITIES = uuid.UUID("fd02801f-0957-4a15-a55a-c8d9606f30b5")  # Kong's declarative config: ids of entities


def kong_id(entity: str, key: str) -> str:
    """The id Kong's declarative config gives an entity without one (a UUID v5 of its endpoint
    key, e.g. a consumer's username), so that X-Consumer-ID is the value Kong would send."""
    return str(uuid.uuid5(uuid.uuid5(_KONG_ENTITIES, entity), key))


# -- decK's ${{ env "DECK_NAME" }} -----------------------------------------------------------------


class Substituted(str):
    """A value after decK's environment substitution; `template` is the text as written."""

    template: str


def substitute_env(tree: Any, env: Mapping[str, str], problems: Problems, path: Loc = ()) -> Any:
    """decK's substitution, on parsed values: only `env "DECK_..."` calls, and every variable
    named must be set (decK refuses the file otherwise)."""
    if isinstance(tree, dict):
        return {key: substitute_env(value, env, problems, (*path, key)) for key, value in tree.items()}
    if isinstance(tree, list):
        return [substitute_env(value, env, problems, (*path, i)) for i, value in enumerate(tree)]
    if not isinstance(tree, str) or "${{" not in tree:
        return tree

    def replace(m: re.Match[str]) -> str:
        call = _ENV_CALL.fullmatch(m[1])
        if call is None:
            problems.add(path, f"unsupported decK template {m[0]!r}: only ${{{{ env \"DECK_NAME\" }}}} is supported")
        elif not call[1].startswith("DECK_"):
            problems.add(path, f"environment variable {call[1]!r}: decK only reads variables whose names start "
                               "with DECK_")
        elif call[1] not in env:
            problems.add(path, f"environment variable {call[1]} is not set (${{{{ env \"{call[1]}\" }}}})")
        else:
            return env[call[1]]
        return m[0]

    result = Substituted(_TEMPLATE.sub(replace, tree))
    result.template = tree
    return result


def as_reference(value: Any) -> Any:
    """The converter's form of a secret: `${{ env "X" }}` written as the native `{env://X}`."""
    if isinstance(value, Substituted):
        return _TEMPLATE.sub(lambda m: "{env://" + _ENV_CALL.fullmatch(m[1])[1] + "}", value.template)
    return value


def plain(tree: Any) -> Any:
    """The tree with plain str, dict and list only (for YAML and for pydantic)."""
    if isinstance(tree, dict):
        return {plain(k): plain(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [plain(v) for v in tree]
    return str(tree) if isinstance(tree, str) else tree


# -- the file's entities -----------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    loc: Loc
    url: str | None


@dataclass
class Route:
    name: str
    service: str
    loc: Loc
    fields: dict[str, Any]
    hosts: tuple[str, ...] = ()


@dataclass
class Translator:
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

    def _read_group(self, group: Any, loc: Loc) -> None:
        if (group := self._mapping(group, loc)) is None:
            return
        known_fields(group, loc, GROUP_FIELDS, "consumer group", self.problems)
        name = group.get("name")
        if not isinstance(name, str) or not name:
            self.problems.add(loc, "a consumer group needs a name")
            return
        if name in self.groups:
            self.problems.add(loc, f"consumer group {name!r} is declared twice")
        self.groups.append(name)
        for i, plugin in enumerate(self._list(group, "plugins", loc)):
            self._add_plugin(plugin, (*loc, "plugins", i), {"consumer_group": name})

    def _read_consumer(self, consumer: Any, loc: Loc) -> None:
        if (consumer := self._mapping(consumer, loc)) is None:
            return
        known_fields(consumer, loc, CONSUMER_FIELDS, "consumer", self.problems, CONSUMER_HINTS)
        username = consumer.get("username")
        if not isinstance(username, str) or not username:
            self.problems.add(loc, "a consumer needs a username (native consumers are named by username)")
            return
        if username in self.consumers:
            self.problems.add(loc, f"consumer {username!r} is declared twice")
        native: dict[str, Any] = {"id": str(consumer["id"]) if consumer.get("id") is not None else kong_id(
            "consumers", username)}
        if consumer.get("custom_id") is not None:
            native["custom_id"] = str(consumer["custom_id"])
        keys = []
        for i, credential in enumerate(self._list(consumer, "keyauth_credentials", loc)):
            cloc = (*loc, "keyauth_credentials", i)
            if (credential := self._mapping(credential, cloc)) is None:
                continue
            known_fields(credential, cloc, KEY_FIELDS, "key-auth credential", self.problems,
                         {"ttl": "expiring keys are not supported; remove the key to revoke it"})
            if not isinstance(credential.get("key"), str) or not credential["key"]:
                self.problems.add(cloc, "a key-auth credential needs a key")
                continue
            self.origins[("consumers", username, "keys", len(keys))] = Origin((*cloc, "key"))
            # Kong gives a key without an id a random one; a stable one here, made from what is not secret.
            key_id = str(credential["id"]) if credential.get("id") is not None else kong_id(
                "keyauth_credentials", f"{native['id']}:{len(keys)}")
            keys.append({"key": self.secret(credential["key"]), "id": key_id})
        groups = []
        for i, group in enumerate(self._list(consumer, "groups", loc)):
            name = group.get("name") if isinstance(group, dict) else group
            if not isinstance(name, str) or not name:
                self.problems.add((*loc, "groups", i), "expected a consumer group name ({name: ...})")
            elif name not in self.groups:
                self.problems.add((*loc, "groups", i), f"consumer group {name!r} is not declared under consumer_groups")
            else:
                groups.append(name)
        if groups:
            native["groups"] = groups
        acls = []  # the acl plugin's groups (Kong's acls credentials)
        for i, acl in enumerate(self._list(consumer, "acls", loc)):
            aloc = (*loc, "acls", i)
            if (acl := self._mapping(acl, aloc)) is None:
                continue
            known_fields(acl, aloc, ACL_FIELDS, "acl credential", self.problems)
            if not isinstance(acl.get("group"), str) or not acl["group"]:
                self.problems.add(aloc, "an acl credential needs a group")
            elif acl["group"] not in acls:
                acls.append(acl["group"])
        if acls:
            native["acls"] = acls
        if keys:
            native["keys"] = keys
        self.consumers[username] = native
        self.origins[("consumers", username)] = Origin(loc)
        for value in (username, native.get("id"), native.get("custom_id")):
            if value is not None:
                self.consumer_ids.setdefault(value, username)
        for i, plugin in enumerate(self._list(consumer, "plugins", loc)):
            self._add_plugin(plugin, (*loc, "plugins", i), {"consumer": username})

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


# -- the native policy -------------------------------------------------------------------------------


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.hostname else None


def _native_policy(t: Translator, routes: dict[str, RouteBuild]) -> dict[str, Any]:
    gateway: dict[str, Any] = {}
    urls = sorted({o for build in routes.values() for u in build.public_urls if (o := _origin(u))})
    if urls:
        gateway["urls"] = urls
    if t.hosts:
        gateway["hosts"] = t.hosts
    deck_limits.gateway_state(t, gateway)  # the Redis rate-limiting plugins named
    limits = [build.native.get("acl", {}).get("max_request_body_size", 0) for build in routes.values()]
    if max(limits, default=0) > deck_registry.DEFAULT_BODY_LIMIT:
        gateway["max_body_size"] = max(limits)
    services = {}
    for name in dict.fromkeys(build.service for build in routes.values()):
        service = t.services[name]
        services[name] = {"url": service.url}
    policy: dict[str, Any] = {"version": 1}
    if gateway:
        policy["gateway"] = gateway
    if t.groups:
        policy["consumer_groups"] = list(t.groups)
    if t.consumers:
        policy["consumers"] = t.consumers
    policy["services"] = services
    policy["routes"] = {name: build.native for name, build in routes.items()}
    return policy


def _validation_problems(err: ValidationError, origins: dict[Loc, Origin], problems: Problems) -> list[str]:
    """Native validation errors, placed in the decK file through the origins of native sections
    (plugin options keep their Kong names, so the rest of a location usually exists there too)."""
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        cut = next((n for n in range(len(loc), 0, -1) if loc[:n] in origins), 0)
        message = "unknown option" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        if cut:
            origin = origins[loc[:cut]]
            problems.add((*origin.loc, *loc[cut:]), message, name=origin.name, name_at=origin.name_at)
        else:
            problems.add(("(translated policy)", *loc) if loc else (), message)
    return problems.messages()


def translate_deck(data: dict[str, Any], source: str, root: yaml.Node | None = None, *,
                   env: Mapping[str, str] | None = None, secret_references: bool = False,
                   settings: DeckSettings | None = None) -> dict[str, Any]:
    """The native policy of a decK file, as a plain dict, validated. Raises PolicyError with one
    located message per problem. With `secret_references`, secrets written as decK env
    substitutions come out as `{env://NAME}` references instead of their values (the converter)."""
    from .loader import PolicyError
    from .models import Policy
    from .secrets import SecretResolver

    env = os.environ if env is None else env
    problems = Problems(root)
    data = substitute_env(data, env, problems)
    t = Translator(problems, secret_references, settings or DeckSettings())
    t.read(data)
    deck_vault.check_vault_references(data, problems)
    routes = t.build_routes()
    if not routes and not problems:
        problems.add((), "the file defines no route: nothing would be served")
    if problems:
        raise PolicyError(source, problems.messages())
    native = plain(_native_policy(t, routes))
    resolver = SecretResolver(base_dir=Path(source).parent)
    resolver.env = {k: v for k, v in env.items() if k.startswith("DECK_")}
    try:
        Policy.model_validate(native, context={"secrets": resolver})
    except ValidationError as e:
        raise PolicyError(source, _validation_problems(e, t.origins, problems)) from None
    return native


def convert_file(path: str | Path, *, env: Mapping[str, str] | None = None, inline_secrets: bool = False,
                 settings: DeckSettings | None = None) -> str:
    """The native policy of a decK file as YAML (what scripts/deck2policy prints)."""
    from .loader import PolicyError, parse_yaml

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(source, [f"cannot read the file: {e}"]) from None
    data, root = parse_yaml(text, source)
    if not isinstance(data, dict) or "_format_version" not in data:
        raise PolicyError(source, ["not a decK file: it has no _format_version"])
    native = translate_deck(data, source, root, env=env, secret_references=not inline_secrets, settings=settings)
    header = (f"# Native MCP gateway policy translated from the Kong decK file {Path(path).name}.\n"
              f"# Run it with: scripts/gateway --set mcp_policy=<this file> (docs/kong.md explains the mapping).\n")
    return header + yaml.safe_dump(native, sort_keys=False, allow_unicode=True, width=120)
