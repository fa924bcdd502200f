"""REST tools compiled once per policy version: each tool's MCP definition, its argument validator
and its request template, and for each serving route the catalog it serves.

A conversion-listener route serves its own tools; a listener serves the tools of every
conversion route (conversion-only or conversion-listener) whose `tags` hold its `server.tag`, in
policy order. Two tools of one catalog with the same name are refused at load, naming both: Kong
gives no order between tagged plugins, so which one a call would reach is not left to chance."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ..policy.derived import PerPolicy
from ..routing import CompiledRoute, RouteMatch, RouteTable
from .settings import BODY_ARGUMENT, SERVING_MODES, RestParameter, RestTool, RestToolsSettings

if TYPE_CHECKING:
    from ..policy.models import Policy, Route, Service

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ANNOTATIONS = {"title": "title", "read_only_hint": "readOnlyHint", "destructive_hint": "destructiveHint",
                "idempotent_hint": "idempotentHint", "open_world_hint": "openWorldHint"}


@dataclass(frozen=True, slots=True, eq=False)
class CompiledTool:
    name: str
    home: str  # the route that defines it: its service is called, its credential mediation applies
    spec: RestTool
    definition: dict[str, Any]  # as tools/list shows it
    validator: Draft202012Validator
    match: RouteMatch  # the home route, as a request on `path` would match it (strip_path)
    path: str  # the path template as the route sees it, e.g. /orders-mcp/orders/{orderId}
    base: str  # the upstream path every call must stay under (the template's fixed start, upstream)
    by_location: dict[str, tuple[RestParameter, ...]]

    @property
    def service(self) -> "Service":
        return self.match.route.service


@dataclass(frozen=True, slots=True)
class Catalog:
    """What one serving route serves."""

    route: str
    settings: RestToolsSettings  # the serving route's (its server settings apply)
    tools: dict[str, CompiledTool]
    definitions: tuple[dict[str, Any], ...]


def _route_path(route: "Route", tool: RestTool) -> tuple[str, str | None]:
    """(the tool's path, the route path it falls under or None). Kong's rules, as its examples use
    them: a relative path is under the route's first path; a path under one of the route's paths
    is a request on the route (strip_path removes the prefix); any other path is the service's
    own (appended to the service path as it is: the recipe's `/orders` on route `/orders-mcp`)."""
    first = route.paths[0]
    path = tool.path if tool.path is not None else first
    if not path.startswith("/"):
        path = first.rstrip("/") + "/" + path.removeprefix("./")
    if any(seg in (".", "..") for seg in path.split("/")):
        raise ValueError(f"path {path!r} has a dot segment")
    prefix = max((p for p in route.paths if path.startswith(p)), key=len, default=None)
    return path, prefix


def _input_schema(tool: RestTool) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for p in tool.parameters:
        prop = dict(p.schema_)
        if p.description and "description" not in prop:
            prop["description"] = p.description
        properties[p.name] = prop
        if p.required:
            required.append(p.name)
    if tool.request_body is not None:
        prop = dict(tool.request_body.schema_)
        if tool.request_body.description and "description" not in prop:
            prop["description"] = tool.request_body.description
        properties[BODY_ARGUMENT] = prop
        if tool.request_body.required:
            required.append(BODY_ARGUMENT)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False  # an argument no parameter takes is a mistake, not something to drop
    return schema


def _definition(name: str, tool: RestTool, schema: dict[str, Any]) -> dict[str, Any]:
    definition: dict[str, Any] = {"name": name}
    if tool.annotations is not None and tool.annotations.title:
        definition["title"] = tool.annotations.title
    definition["description"] = tool.description
    definition["inputSchema"] = schema
    if tool.annotations is not None:
        hints = {_ANNOTATIONS[k]: v for k, v in tool.annotations.model_dump().items() if v is not None}
        if hints:
            definition["annotations"] = hints
    return definition


def _compile_tool(route_name: str, route: "Route", service: "Service", index: int, tool: RestTool) -> CompiledTool:
    name = tool.name or (tool.annotations.title if tool.annotations and tool.annotations.title else None) \
        or f"{route_name}-{index + 1}"  # Kong's generated name: <route>-<position>
    schema = _input_schema(tool)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise ValueError(f"tool {name!r}: a parameter schema is not a valid JSON Schema: {e.message}") from None
    path, prefix = _route_path(route, tool)
    match = RouteMatch(CompiledRoute(route_name, route, service), "mcp", prefix)
    fixed = _PLACEHOLDER.split(path, maxsplit=1)[0]
    base = RouteTable.upstream_path(match, fixed)
    by_location = {where: tuple(p for p in tool.parameters if p.in_ == where)
                   for where in ("path", "query", "header", "cookie")}
    return CompiledTool(name, route_name, tool, _definition(name, tool, schema), Draft202012Validator(schema),
                        match, path, base, by_location)


def _own_tools(policy: "Policy", name: str, settings: RestToolsSettings) -> list[CompiledTool]:
    route = policy.routes[name]
    service = policy.services[route.service]
    return [_compile_tool(name, route, service, i, t) for i, t in enumerate(settings.tools)]


def _catalog(route: str, settings: RestToolsSettings, tools: list[CompiledTool]) -> Catalog:
    by_name: dict[str, CompiledTool] = {}
    for t in tools:
        if t.name in by_name:
            other = by_name[t.name]
            raise ValueError(f"route {route!r} would serve two tools named {t.name!r} (from routes {other.home!r} "
                             f"and {t.home!r}): rename one")
        by_name[t.name] = t
    return Catalog(route, settings, by_name, tuple(t.definition for t in tools))


def build(policy: "Policy") -> dict[str, Catalog]:
    """Serving route -> its catalog. Raises ValueError (the load refuses the policy)."""
    own: dict[str, list[CompiledTool]] = {}
    for name, route in policy.routes.items():
        settings = route.rest_tools
        if settings is not None and settings.mode != "listener":
            try:
                own[name] = _own_tools(policy, name, settings)
            except ValueError as e:
                raise ValueError(f"route {name!r}: rest_tools: {e}") from None
    catalogs: dict[str, Catalog] = {}
    for name, route in policy.routes.items():
        settings = route.rest_tools
        if settings is None or settings.mode not in SERVING_MODES:
            continue
        if settings.mode == "conversion-listener":
            catalogs[name] = _catalog(name, settings, own[name])
            continue
        tag = settings.server.tag
        sources = [r for r, s in ((r, policy.routes[r].rest_tools) for r in own) if tag in s.tags]
        if not sources:
            raise ValueError(f"route {name!r}: listener for tag {tag!r}, but no route with rest_tools has that tag")
        if route.acl is None and (governed := [r for r in sources if policy.routes[r].acl is not None]):
            raise ValueError(f"route {name!r}: listener without acl serves tools of route(s) {', '.join(governed)}, "
                             "which have one: give the listener the acl its tools need (decK files get it from the "
                             "tagged plugins)")
        catalogs[name] = _catalog(name, settings, [t for r in sources for t in own[r]])
    return catalogs


def check_policy(policy: "Policy") -> None:
    """At load (Policy validation): tool paths under their routes, valid schemas, listeners' tags
    and duplicate names. The policy model imports this module: routing, which the catalog builds
    on, imports the model for annotations only."""
    if any(r.rest_tools is not None for r in policy.routes.values()):
        for name, route in policy.routes.items():
            if route.rest_tools is not None and route.ai is not None:
                raise ValueError(f"route {name!r}: rest_tools and ai exclude each other (an LLM route forwards to "
                                 "its provider; a rest_tools route answers MCP itself)")
        build(policy)


_catalogs = PerPolicy(build)


def catalog(policy: "Policy", route: str | None) -> Catalog | None:
    return _catalogs(policy).get(route) if route else None
