"""Kong's request transformers on a decK route (see `deck_plugins` and docs/kong.md):

    request-transformer(-advanced) setting a credential  -> credentials (mode: inject; the token swap)
    consumer / consumer-group scoped instances           -> credentials.overrides
    request-transformer(-advanced) otherwise             -> request_transform (headers, query string)

A transformer "sets a credential" when a value it adds, replaces or appends comes from a decK
variable or a vault, or goes into a header or parameter whose name says credential: the gateway
sends those with the credential mediation only (to the route's upstream alone, for authenticated
callers). Body, uri and http_method operations are refused: on an MCP route the body is the
JSON-RPC message the gateway decides on, and it is forwarded as decided."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .deck_registry import RT, RTA, Plugin, RouteBuild, _empty, take_options
from .secrets import CREDENTIAL_NAME

if TYPE_CHECKING:
    from .deck import Translator

OPERATIONS = ("remove", "rename", "replace", "add", "append")
SETTING = ("replace", "add", "append")
_NOT_HEADERS = {
    "body": "body operations are not supported: on an MCP route the body is the JSON-RPC message the gateway decides "
            "on, and it is forwarded as decided",
    "uri": "uri is not supported: the upstream path is the route's (its service path and strip_path)",
}


def translate_transformers(build: RouteBuild, t: "Translator") -> None:
    advanced, plain = build.plugins.get(RTA), build.plugins.get(RT)
    personal = _most_specific([p for p in build.personal if p.name == RTA], t)
    credential = [p for p in (advanced, plain) if p is not None and (_sets_credential(p) or (p is advanced and personal))]
    generic = [p for p in (advanced, plain) if p is not None and p not in credential]
    if len(credential) > 1:
        credential[1].problem(t.problems, f"{credential[0].name} on this route already sets the credential; the gateway "
                              "injects it from one transformer only")
    if credential or personal:
        _credentials(build, t, credential[0] if credential else None, personal)
    if len(generic) > 1:
        generic[1].problem(t.problems, f"{generic[0].name} on this route already transforms requests; put the "
                           "operations of both in one transformer")
    if generic:
        build.native["request_transform"] = _operations(generic[0], t)
        build.origin(t, "request_transform", generic[0])


def _sets_credential(plugin: Plugin) -> bool:
    for op in SETTING:
        section = plugin.config.get(op)
        for target in ("headers", "querystring"):
            entries = section.get(target) if isinstance(section, dict) else None
            for entry in entries if isinstance(entries, list) else ():
                name = str(entry).split(":", 1)[0]
                if (CREDENTIAL_NAME.search(name) or hasattr(entry, "template")  # a decK ${{ env }} substitution
                        or any(ref in str(entry) for ref in ("{vault://", "{env://", "{file://"))):
                    return True
    return False


def _operations(plugin: Plugin, t: "Translator") -> dict[str, Any]:
    """Kong's header and query string operations, in the native form (credentials or request_transform)."""
    config = take_options(plugin, (*OPERATIONS, "allow"), t.problems)
    native: dict[str, Any] = {}
    for op in (*OPERATIONS, "allow"):
        section = config.get(op) or {}
        if not isinstance(section, dict):
            plugin.problem(t.problems, "expected a mapping", "config", op)
            continue
        for target, entries in section.items():
            if _empty(entries):
                continue
            if op == "allow" or target not in ("headers", "querystring"):
                plugin.problem(t.problems, _NOT_HEADERS.get(target, "only header and query string operations are "
                               "supported"), "config", op, target)
            elif not isinstance(entries, list):
                plugin.problem(t.problems, "expected a list of 'name:value' entries", "config", op, target)
            else:
                values = entries if op in ("remove", "rename") else [t.secret(e) for e in entries]
                native.setdefault(op, {})[target] = values
    return native


def _names(entries: Iterable[Any]) -> set[str]:
    return {str(e).split(":", 1)[0].strip().lower() for e in entries}


def _strips_authorization(ops: dict[str, Any]) -> bool:
    return "authorization" in _names(ops.get("remove", {}).get("headers", [])) | _names(
        ops.get("replace", {}).get("headers", []))


def _credentials(build: RouteBuild, t: "Translator", default: Plugin | None, personal: list[Plugin]) -> None:
    """Kong adds the transformer's headers to what reaches the upstream; the native `inject` mode
    first removes every client credential. The two agree when the client's Authorization would
    not reach the upstream anyway (ai-mcp-oauth2 with passthrough_credentials: false, or a
    transformer that removes or replaces it), and the gateway only injects for authenticated
    callers (key-auth or ai-mcp-oauth2; key-auth's anonymous consumer counts, as in Kong)."""
    native, oauth = build.native, build.native.get("oauth")
    oauth_strips = oauth is not None and not oauth.get("passthrough_credentials", False)
    first = default or personal[0]
    if "key_auth" not in native and oauth is None:
        first.problem(t.problems, "becomes credential injection (credentials: mode inject), which the gateway does "
                      "only for authenticated callers; add key-auth or ai-mcp-oauth2 to this route")
        return
    credentials: dict[str, Any] = {"mode": "inject"}
    if default is not None:
        ops = _operations(default, t)
        if not (oauth_strips or _strips_authorization(ops)):
            default.problem(t.problems, _PASSTHROUGH_CONFLICT)
        credentials.update(ops)
        build.origin(t, "credentials", default)
    elif not oauth_strips:
        first.problem(t.problems, _PASSTHROUGH_CONFLICT)
    overrides = []
    for plugin in personal:
        ops = _operations(plugin, t)
        if not (oauth_strips or _strips_authorization(ops)):
            plugin.problem(t.problems, _PASSTHROUGH_CONFLICT)
        who = {"consumers": [plugin.scope["consumer"]]} if "consumer" in plugin.scope else {
            "groups": [plugin.scope["consumer_group"]]}
        build.origin(t, "credentials", plugin, "overrides", len(overrides))
        overrides.append({**who, **ops})
    if overrides:
        credentials["overrides"] = overrides
    if (native.get("key_auth") or {}).get("anonymous"):
        credentials["allow_anonymous"] = True
    native["credentials"] = credentials


_PASSTHROUGH_CONFLICT = ("becomes credential injection, which replaces the client's credentials, but on this route "
                         "the client's Authorization header reaches the upstream in Kong; use it with ai-mcp-oauth2 "
                         "passthrough_credentials: false (the token-swap pattern) or remove/replace Authorization in "
                         "the transformer itself")


def _most_specific(plugins: list[Plugin], t: "Translator") -> list[Plugin]:
    """Per consumer or consumer group, the instance Kong would run (route over service over
    global); consumers first, then groups in file order."""
    chosen: dict[tuple[str, str], Plugin] = {}
    for plugin in plugins:
        key = ("consumer", plugin.scope["consumer"]) if "consumer" in plugin.scope else (
            "group", plugin.scope["consumer_group"])
        current = chosen.get(key)
        if current is None or plugin.rank > current.rank:
            chosen[key] = plugin
        elif plugin.rank == current.rank:
            plugin.problem(t.problems, f"a second {plugin.name} plugin for the same {key[0]} at the same level as "
                           f"{t.problems.where(current.loc)}")
    return sorted(chosen.values(), key=lambda p: ("consumer" not in p.scope, p.index))
