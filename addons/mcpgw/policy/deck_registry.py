"""The shared part of the decK plugin translators (policy/deck_*.py): the table of plugins the
gateway translates (names, the fixed order of their work, what is said of them), a plugin entry as
read from the file (`Plugin`), the route under construction it becomes a setting of
(`RouteBuild`), problems located in the file, and the option readers.

Options are read with Kong's names and defaults; an option that would change behaviour and has
no native equivalent is refused, one that changes nothing here is accepted (`INERT`).
The translators import this module; it imports none of them (deck_plugins.py assembles them)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from .yaml_source import yaml_line

if TYPE_CHECKING:
    from .deck import Translator


Loc = tuple[str | int, ...]
WELL_KNOWN = "/.well-known/oauth-protected-resource"
DEFAULT_BODY_LIMIT = 1024 * 1024  # Kong's max_request_body_size default, and the gateway's max_body_size
PLUGIN_FIELDS = ("name", "config", "instance_name", "tags", "enabled", "ordering", "protocols", "id",
                 "service", "route", "consumer", "consumer_group")
# Kong's logging plugins (deck_logging.py translates them).
FILE_LOG, HTTP_LOG, PROMETHEUS, OTEL = "file-log", "http-log", "prometheus", "opentelemetry"
LOGGING_PLUGINS = (FILE_LOG, HTTP_LOG, PROMETHEUS, OTEL)
LOGGING_TEXT = "file-log, http-log, prometheus and opentelemetry (docs/telemetry.md)"
# The gateway's fixed order of access-phase work, by the plugin that does it in Kong.
NATIVE_ORDER = ("cors", "datakit", "ai-mcp-oauth2", "openid-connect", "key-auth", "request-validator", "acl", "ai-mcp-proxy", "rate-limiting",
                "rate-limiting-advanced", "ai-rate-limiting-advanced", "request-transformer-advanced",
                "request-transformer", "ai-proxy", "ai-proxy-advanced", "ai-prompt-guard",
                *LOGGING_PLUGINS)  # they only report traffic, so they come after every other
RTA, RT, RESPONSE_TRANSFORMER = "request-transformer-advanced", "request-transformer", "response-transformer-advanced"
SUPPORTED = ("key-auth", "acl", "ai-mcp-proxy", "ai-mcp-oauth2", "openid-connect", "cors", RTA, RT, RESPONSE_TRANSFORMER, "datakit",
             "rate-limiting", "rate-limiting-advanced", "ai-proxy", "ai-proxy-advanced", "ai-rate-limiting-advanced", "ai-prompt-guard",
             *LOGGING_PLUGINS, "request-validator")
SUPPORTED_TEXT = ("key-auth, acl (with include_consumer_groups), ai-mcp-proxy, ai-mcp-oauth2, "
                  "openid-connect (bearer or introspection), cors, "
                  "request-transformer and request-transformer-advanced (headers and query string), "
                  "response-transformer-advanced (PRM rewrite), datakit (PRM challenge), "
                  "rate-limiting, rate-limiting-advanced and ai-rate-limiting-advanced (strategy local or redis), "
                  "ai-proxy and ai-proxy-advanced (round-robin or least-connections; docs/ai.md), ai-prompt-guard, "
                  "request-validator (docs/kong.md), " + LOGGING_TEXT)
REFUSED: dict[str, str] = {}  # plugin -> why it is refused, instead of the generic message


def _equal(default: Any) -> Any:
    return lambda value: value == default or value in ([], {})


def _any(value: Any) -> bool:
    return True


# Options accepted although they have no native counterpart, when the value changes nothing here
# (each predicate says when). Kong's dumps spell every option out with its default.
INERT: dict[str, dict[str, Any]] = {
    "key-auth": {"identity_realms": lambda v: isinstance(v, list) and all(
        isinstance(r, dict) and r.get("scope", "cp") == "cp" for r in v)},  # Kong's own consumers only
    "ai-mcp-oauth2": {
        "keepalive": _any, "http_version": _any, "metadata_discovery_retry": _any,
        "tls_client_auth_ssl_verify": _any, "args": _equal({}), "headers": _equal({}),
    },
    "ai-mcp-proxy": {
        "server": _any,  # listener settings, unused in passthrough-listener mode
    },
    "cors": {"private_network": _equal(False), "allow_origin_absent": _equal(True)},
    RTA: {"dots_in_keys": _any},  # about body operations, which are refused
}
# What to say when an INERT option has a value that would change something.
INERT_SUPPORTED: dict[tuple[str, str], str] = {
    ("cors", "private_network"): "only false, Kong's default, is supported",
    ("cors", "allow_origin_absent"): "only true, Kong's default, is supported",
}


# -- problems, located in the file -----------------------------------------------------------------


def _format(loc: Iterable[str | int], dotted: bool = False) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out or dotted else str(part))
    return out


class Problems:
    """One message per problem, in file order; duplicates (a service-level plugin seen from each of
    its routes) are kept once."""

    def __init__(self, root: yaml.Node | None = None):
        self.root = root
        self._messages: dict[str, tuple[int, int]] = {}  # message -> (line, order of discovery)

    def _line(self, loc: Loc) -> int | None:
        return yaml_line(self.root, loc)

    def where(self, loc: Loc, name: str | None = None, name_at: int | None = None) -> str:
        """`services[0].routes[0].plugins[2] (name: cors).config.origins (line 57)`"""
        cut = len(loc) if name_at is None else name_at
        text = _format(loc[:cut]) or "(top level)"
        if name:
            text += f" (name: {name})"
        text += _format(loc[cut:], dotted=True)
        number = self._line(loc)
        return text + (f" (line {number})" if number else "")

    def add(self, loc: Loc, message: str, *, name: str | None = None, name_at: int | None = None) -> None:
        self._messages.setdefault(f"{self.where(loc, name, name_at)}: {message}",
                                  (self._line(loc) or 0, len(self._messages)))

    def messages(self) -> list[str]:
        return sorted(self._messages, key=self._messages.__getitem__)

    def __bool__(self) -> bool:
        return bool(self._messages)


def known_fields(obj: dict[str, Any], loc: Loc, supported: Iterable[str], what: str, problems: Problems,
                 hints: dict[str, str] | None = None) -> None:
    supported = tuple(supported)
    for key in obj:
        if key not in supported:
            hint = (hints or {}).get(key) or f"supported {what} fields: {', '.join(supported)}"
            problems.add((*loc, key), f"{what} field {key!r} is not supported ({hint})")


def as_bool(value: Any, loc: Loc, problems: Problems) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    problems.add(loc, f"expected true or false, got {value!r}")
    return False


def as_int(value: Any, loc: Loc, problems: Problems) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    problems.add(loc, f"expected a whole number, got {value!r}")
    return 0


@dataclass(frozen=True)
class Origin:
    """Where a native setting comes from in the decK file (for errors found by native validation)."""

    loc: Loc
    name: str | None = None  # the plugin's name, shown after its entry
    name_at: int | None = None


# -- plugins -------------------------------------------------------------------------------------


@dataclass
class Plugin:
    name: str
    config: dict[str, Any]
    loc: Loc
    scope: dict[str, str]
    ordering: Any = None
    index: int = 0

    @property
    def rank(self) -> int:
        """Kong's precedence among instances that apply: route over service over global."""
        return 2 if "route" in self.scope else 1 if "service" in self.scope else 0

    def where(self, problems: Problems, *sub: str | int) -> str:
        return problems.where((*self.loc, *sub), self.name, len(self.loc))

    def problem(self, problems: Problems, message: str, *sub: str | int) -> None:
        problems.add((*self.loc, *sub), message, name=self.name, name_at=len(self.loc))


def _scope_name(value: Any) -> Any:
    return value.get("name") or value.get("id") if isinstance(value, dict) else value


def read_plugin(entry: dict[str, Any], loc: Loc, scope: dict[str, str], problems: Problems) -> Plugin | None:
    """A plugin entry, or None when it is disabled (Kong does not run it) or refused."""
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        problems.add(loc, "a plugin needs a name")
        return None
    known_fields(entry, loc, PLUGIN_FIELDS, "plugin", problems)
    if not as_bool(entry.get("enabled", True), (*loc, "enabled"), problems):
        return None
    scope = dict(scope)
    for key in ("service", "route", "consumer", "consumer_group"):
        if entry.get(key) is None:
            continue
        value = _scope_name(entry[key])
        if not isinstance(value, str) or (key in scope and scope[key] != value):
            problems.add((*loc, key), f"{key} {value!r} contradicts where the plugin is declared", name=name,
                         name_at=len(loc))
            return None
        scope[key] = value
    protocols = entry.get("protocols")
    if protocols is not None and not {"http", "https"} <= set(protocols if isinstance(protocols, list) else []):
        problems.add((*loc, "protocols"), "a plugin limited to some protocols is not supported: the gateway applies "
                     "every plugin to http and https requests alike", name=name, name_at=len(loc))
        return None
    if name in REFUSED or name not in SUPPORTED:
        problems.add(loc, REFUSED.get(name) or f"plugin {name!r} is not supported; supported plugins: {SUPPORTED_TEXT}",
                     name=name)
        return None
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        problems.add((*loc, "config"), "expected a mapping", name=name, name_at=len(loc))
        return None
    return Plugin(name, config, loc, scope, entry.get("ordering"))


def take_options(plugin: Plugin, supported: Iterable[str], problems: Problems) -> dict[str, Any]:
    """The plugin's options that map to native ones; Kong's `null` means unset. Others are refused
    unless they change nothing here."""
    supported, inert = tuple(supported), INERT.get(plugin.name, {})
    taken = {}
    for key, value in plugin.config.items():
        if value is None:
            continue
        if key in supported:
            taken[key] = value
        elif key in inert and (plugin.name, key) in INERT_SUPPORTED and not inert[key](value):
            shown = json.dumps(value) if isinstance(value, (str, bool, int, float)) else "this value"  # no secret shown
            plugin.problem(problems, f"{shown} is not supported ({INERT_SUPPORTED[plugin.name, key]})", "config", key)
        elif key not in inert or not inert[key](value):
            plugin.problem(problems, f"option not supported by this gateway (supported: {', '.join(supported)})",
                           "config", key)
    return taken


def check_ordering(plugin: Plugin, problems: Problems) -> None:
    """`ordering` is accepted when it asks for what the gateway's fixed order already does."""
    ordering = plugin.ordering
    if ordering is None:
        return
    if not isinstance(ordering, dict) or not set(ordering) <= {"before", "after"}:
        plugin.problem(problems, "expected before: and/or after:", "ordering")
        return
    mine = NATIVE_ORDER.index(plugin.name) if plugin.name in NATIVE_ORDER else None
    for direction, phases in ordering.items():
        if not isinstance(phases, dict) or not set(phases) <= {"access"}:
            plugin.problem(problems, "only the access phase can be ordered (as in Kong)", "ordering", direction)
            continue
        for other in phases.get("access") or []:
            if other not in NATIVE_ORDER or mine is None:
                continue
            theirs = NATIVE_ORDER.index(other)
            if (mine > theirs) if direction == "before" else (mine < theirs):
                plugin.problem(problems, f"{plugin.name} cannot run {direction} {other}: the gateway's order is "
                               f"fixed ({', '.join(NATIVE_ORDER)})", "ordering", direction, "access")


# -- routes under construction --------------------------------------------------------------------


@dataclass
class RouteBuild:
    name: str
    service: str
    loc: Loc
    native: dict[str, Any]
    plugins: dict[str, Plugin]  # by name: the instance Kong would run on this route
    personal: list[Plugin]  # consumer or consumer-group scoped instances that apply here
    service_url: str | None
    folded: bool = False  # a PRM route, folded into the route it describes
    public_urls: list[str] = field(default_factory=list)  # the gateway's own URLs named by plugins
    challenge: Plugin | None = None
    rewrite: tuple[Plugin, str, str] | None = None  # (plugin, upstream PRM URL, resource)
    body_limits: list[int] = field(default_factory=list)

    def origin(self, t: "Translator", section: str, plugin: Plugin, *more: str | int) -> None:
        t.origins[("routes", self.name, section, *more)] = Origin((*plugin.loc, "config"), plugin.name, len(plugin.loc))


@dataclass
class Service:
    """A decK service as read (deck_ai and deck_conversion add the ones their plugins imply)."""

    name: str
    loc: Loc
    url: str | None


def _empty(value: Any) -> bool:
    """Kong's spelled-out defaults of a transformer: nothing, or sections of empty lists."""
    return value in (None, [], {}) or (isinstance(value, dict) and all(_empty(v) for v in value.values()))
