"""OAuth discovery through the gateway from a decK file: datakit's 401 challenge graph -> the
route's `prm.challenge`; a route serving /.well-known/oauth-protected-resource<path> of another
route with response-transformer-advanced replacing `resource` -> that route's `prm` rewrite
(the PRM route itself is folded into the route it describes)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .deck_registry import RESPONSE_TRANSFORMER, WELL_KNOWN, Plugin, Problems, RouteBuild, _empty

if TYPE_CHECKING:
    from .deck import Translator


# -- OAuth discovery: datakit challenge, response-transformer-advanced PRM rewrite ------------------


def _fold_prm_route(build: RouteBuild, builds: dict[str, RouteBuild], t: "Translator") -> None:
    """A route serving /.well-known/oauth-protected-resource<path> of another route, proxying the
    upstream's PRM with `resource` replaced: natively, that other route's `prm` rewrite."""
    plugin, problems = build.plugins[RESPONSE_TRANSFORMER], t.problems
    resource = _prm_resource(plugin, problems)
    targets = []
    for path in build.native["paths"]:
        described = path[len(WELL_KNOWN):] if path.startswith(WELL_KNOWN + "/") else None
        target = next((b for b in builds.values() if described is not None and b is not build
                       and RESPONSE_TRANSFORMER not in b.plugins and described in b.native["paths"]), None)
        if target is None:
            plugin.problem(problems, f"response-transformer-advanced is supported only as the PRM rewrite, on a route "
                           f"whose paths are {WELL_KNOWN}<path of another route>; path {path!r} is not (an MCP "
                           "route's answers are the JSON-RPC results the gateway filters and streams as they come)")
            return
        targets.append((target, path))
    for name, other in [*build.plugins.items(), *((p.name, p) for p in build.personal)]:
        if name != RESPONSE_TRANSFORMER:
            other.problem(problems, "not supported on a PRM route: the gateway serves protected resource metadata "
                          "to everyone, without running plugins (discovery precedes authentication)")
    methods = build.native.get("methods")
    if methods is not None and "GET" not in methods:
        problems.add((*build.loc, "methods"), "a PRM route must accept GET")
    if resource is None or build.service_url is None:
        return
    build.folded = True
    for target, path in targets:
        if target.rewrite is not None:
            plugin.problem(problems, f"route {target.name!r} already has its PRM rewritten by "
                           f"{target.rewrite[0].where(problems)}")
            continue
        upstream = build.service_url.rstrip("/") + ("" if build.native.get("strip_path", True) else path)
        target.rewrite = (plugin, upstream, resource)
        target.public_urls.append(resource)


def _prm_resource(plugin: Plugin, problems: Problems) -> str | None:
    """The resource of `replace.json: ["resource:<url>"]`, the one transformation supported."""
    resource, unsupported = None, []
    for op, section in plugin.config.items():
        if _empty(section) or op == "dots_in_keys":
            continue
        if op != "replace" or not isinstance(section, dict):
            unsupported.append(("config", op))
            continue
        for key, value in section.items():
            if _empty(value):
                continue
            if key == "json" and isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
                name, _, text = value[0].partition(":")
                if name.strip() == "resource" and urlsplit(text.strip()).scheme in ("http", "https"):
                    resource = text.strip()
                    continue
            if key == "json_types" and value == ["string"]:
                continue
            unsupported.append(("config", op, key))
    for sub in unsupported:
        plugin.problem(problems, "only replace.json: ['resource:<absolute URL>'] (the PRM rewrite) is supported", *sub)
    if resource is None and not unsupported:
        plugin.problem(problems, "expected replace.json: ['resource:<absolute URL>'] (the PRM rewrite)", "config")
    return None if unsupported else resource


_JQ_TERM = re.compile(r'\.(?P<input>[A-Za-z_][\w-]*)?(?:\.(?P<name>[A-Za-z_][\w-]*)|\["(?P<quoted>[^"]+)"\])\??'
                      r'\s*!=\s*null')
_AUTH_PARAM = re.compile(r'\s*([A-Za-z_]+)\s*=\s*"([^"]*)"\s*')
JSON = "application/json"


def _datakit(plugin: Plugin, build: RouteBuild, t: "Translator") -> None:
    url = _challenge_url(plugin, t.problems)
    if url is None:
        return
    locations = {WELL_KNOWN + p.rstrip("/") for p in build.native["paths"] if not p.startswith(WELL_KNOWN + "/")}
    if urlsplit(url).path not in locations:
        plugin.problem(t.problems, f"the challenge points at {url}, but the gateway serves this route's PRM at "
                       f"{', '.join(sorted(locations))}", "config", "nodes")
        return
    build.challenge = plugin
    build.public_urls.append(url)


def _challenge_url(plugin: Plugin, problems: Problems) -> str | None:
    """Recognise the one datakit graph supported, by node types and wiring (not names): a jq node
    testing request headers for Authorization, a branch on it whose else runs a static node and
    an exit 401 answering with the static node's values as headers and one of them as body.
    Returns the challenge's resource_metadata URL, or None (with a problem)."""
    found = _challenge_graph(plugin.config)
    if isinstance(found, tuple):
        return found[0]
    where = () if found.startswith("only nodes") else ("nodes",)
    plugin.problem(problems, f"{found}; the only datakit graph supported is the PRM challenge (jq: Authorization "
                   "header present?, branch, else: static headers and body + exit 401)", "config", *where)
    return None


def _challenge_graph(config: dict[str, Any]) -> tuple[str] | str:
    """(resource_metadata URL,) of the challenge graph, or why `config` is not that graph."""
    if set(config) - {"nodes", "debug"} or config.get("debug"):
        return "only nodes (and debug: false) are supported"
    nodes = config.get("nodes")
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and isinstance(n.get("name"), str) for n in nodes):
        return "expected a list of named nodes"
    types = sorted(str(n.get("type")) for n in nodes)
    if types != ["branch", "exit", "jq", "static"]:
        return f"node types {types}"
    jq, branch, static, exit_ = (next(n for n in nodes if n.get("type") == t) for t in ("jq", "branch", "static", "exit"))

    inputs = jq.get("inputs")
    if (set(jq) - {"name", "type", "inputs", "jq"} or not isinstance(inputs, dict) or len(inputs) != 1
            or list(inputs.values()) != ["request.headers"] or not _tests_authorization(str(jq.get("jq")), *inputs)):
        return "the jq node must read request.headers and test only that an Authorization header is present"
    if (set(branch) - {"name", "type", "input", "then", "else"} or branch.get("input") != jq["name"]
            or branch.get("then") or sorted(branch.get("else") or []) != sorted([static["name"], exit_["name"]])):
        return "the branch must take the jq node's result and, in else, run the static and exit nodes"

    values, wiring = static.get("values"), exit_.get("inputs") or {}
    body_key = str(wiring.get("body", "")).removeprefix(static["name"] + ".")
    if (set(exit_) - {"name", "type", "status", "inputs", "warn_headers_sent"} or set(wiring) != {"body", "headers"}
            or wiring["headers"] != static["name"] or not isinstance(values, dict) or body_key == wiring["body"]
            or body_key not in values):
        return "the exit node must answer with the static node's values as headers and one of them as body"
    if str(exit_.get("status")) != "401":
        return f"the exit status is {exit_.get('status')!r}, not 401"

    headers = {str(k).lower(): str(v) for k, v in values.items() if k != body_key}
    if set(headers) - {"www-authenticate", "content-type"} or headers.get("content-type", JSON) != JSON:
        return (f"static headers {sorted(headers)}: the gateway's challenge sends WWW-Authenticate and "
                "Content-Type: application/json only")
    try:
        body = json.loads(str(values[body_key]))
    except ValueError:
        body = None
    if body != {"message": "Unauthorized"}:
        return ('the body must be {"message": "Unauthorized"}, the recipe\'s (the gateway answers with its own '
                'challenge body, which says what is missing)')
    scheme, _, text = headers.get("www-authenticate", "").strip().partition(" ")
    params = [_AUTH_PARAM.fullmatch(p) for p in text.split(",")]
    found = dict(m.groups() for m in params if m)
    url = found.get("resource_metadata", "")
    if (scheme.lower() != "bearer" or not all(params) or not set(found) <= {"resource_metadata", "error"}
            or found.get("error", "invalid_token") != "invalid_token" or urlsplit(url).scheme not in ("http", "https")):
        return 'WWW-Authenticate must be Bearer resource_metadata="<URL>", error="invalid_token"'
    return (url,)


def _tests_authorization(expression: str, input_name: str) -> bool:
    """`.headers.Authorization? != null or .headers.authorization? != null`, and its variants."""
    terms = re.split(r"\s+or\s+", expression.strip())
    for term in terms:
        m = _JQ_TERM.fullmatch(term.strip().strip("()").strip())
        if m is None or m["input"] != input_name or (m["name"] or m["quoted"]).lower() != "authorization":
            return False
    return True


def _discovery(build: RouteBuild, t: "Translator") -> None:
    prm: dict[str, Any] = {}
    if build.challenge is not None:
        prm["challenge"] = True
        build.origin(t, "prm", build.challenge)
    if build.rewrite is not None:
        plugin, upstream, resource = build.rewrite
        if "oauth" in build.native:
            plugin.problem(t.problems, f"route {build.name!r} serves its own PRM (ai-mcp-oauth2); it cannot also "
                           "rewrite the upstream's")
            return
        prm.update(mode="rewrite", upstream_url=upstream, resource=resource)
        build.origin(t, "prm", plugin)
    elif prm and "oauth" in build.native:
        prm["mode"] = "serve"
    if prm:
        build.native["prm"] = prm


HANDLERS = {"datakit": _datakit}  # the response-transformer-advanced PRM route is folded before (apply_plugins)
