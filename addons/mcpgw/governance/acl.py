"""The compiled form of a route's ACL settings (acl_settings.py: Kong ai-mcp-proxy names and semantics).

    acl:
      consumer_identifier: username        # username | consumer_id | custom_id
      include_consumer_groups: true
      default_acl:
        - scope: tools
          deny: [developer]
      tools:
        - name: search_repositories
          acl: {allow: [admin, developer]}

A primitive's own `acl` replaces the `default_acl` of its scope entirely; a primitive without an
entry (or whose entry has no `acl`) falls under the `default_acl`. The settings are compiled once
per policy version into frozensets and dicts, so that deciding costs a few lookups."""

from __future__ import annotations

import logging
import re
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .acl_settings import AclLists, AclSettings, Scope

if TYPE_CHECKING:
    from ..policy.models import Policy

log = logging.getLogger("mcpgw.governance")

Primitive = Literal["tool", "prompt", "resource"]
SCOPE_OF: dict[str, Scope] = {"tool": "tools", "prompt": "prompts", "resource": "resources"}


# --- compiled form ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledLists:
    """One allow/deny pair and where it was written (for Decision.rule)."""

    where: str
    allow: frozenset[str] | None
    deny: frozenset[str] | None


def _lists(where: str, lists: AclLists) -> CompiledLists:
    return CompiledLists(where,
                         None if lists.allow is None else frozenset(lists.allow),
                         None if lists.deny is None else frozenset(lists.deny))


def uri_pattern(pattern: str) -> re.Pattern[str]:
    """A resource pattern: '*' matches any run of characters (including '/'); all else is literal."""
    return re.compile("(?s:" + ".*".join(re.escape(part) for part in pattern.split("*")) + r")\Z")


@dataclass(eq=False)
class CompiledAcl:
    settings: AclSettings
    tools: dict[str, CompiledLists]
    prompts: dict[str, CompiledLists]
    resources: dict[str, CompiledLists]  # exact URIs
    resource_patterns: tuple[tuple[re.Pattern[str], CompiledLists], ...]
    defaults: dict[str, CompiledLists]  # by primitive
    # For the groups rule (groups.py): the policy's consumer names; every consumer name, id and
    # custom_id (an authenticated group spelt like one is no group subject); the route's
    # access.always_use_authenticated_groups.
    consumers: frozenset[str] = frozenset()
    consumer_subjects: frozenset[str] = frozenset()
    always_use_authenticated_groups: bool = False
    # engine.view() caches its SubjectView per subject set here (typed loosely: the engine imports this module)
    views: dict[frozenset[str], object] = field(default_factory=dict)

    @property
    def shadow(self) -> bool:
        return self.settings.shadow


def compile_acl(settings: AclSettings, policy: "Policy | None" = None, route_name: str | None = None) -> CompiledAcl:
    defaults = {p: CompiledLists(f"acl.default_acl({SCOPE_OF[p]}): none", None, None) for p in SCOPE_OF}
    for i, d in enumerate(settings.default_acl):
        primitive = next(p for p, s in SCOPE_OF.items() if s == d.scope)
        defaults[primitive] = _lists(f"acl.default_acl[{i}]", d)
    exact: dict[str, CompiledLists] = {}
    patterns: list[tuple[re.Pattern[str], CompiledLists]] = []
    for r in settings.resources:
        if r.acl is None:
            continue
        lists = _lists(f"acl.resources[{r.uri}]", r.acl)
        if "*" in r.uri:
            patterns.append((uri_pattern(r.uri), lists))
        else:
            exact[r.uri] = lists
    return CompiledAcl(
        settings=settings,
        tools={t.name: _lists(f"acl.tools[{t.name}]", t.acl) for t in settings.tools if t.acl is not None},
        prompts={p.name: _lists(f"acl.prompts[{p.name}]", p.acl) for p in settings.prompts if p.acl is not None},
        resources=exact,
        resource_patterns=tuple(patterns),
        defaults=defaults,
        **_policy_context(policy, route_name),
    )


def _policy_context(policy: "Policy | None", route_name: str | None) -> dict:
    if policy is None:
        return {}
    route = policy.routes.get(route_name) if route_name else None
    consumers = policy.consumers
    return {"consumers": frozenset(consumers),
            "consumer_subjects": frozenset(s for n, c in consumers.items() for s in (n, c.id, c.custom_id) if s),
            "always_use_authenticated_groups": bool(route and route.access and route.access.always_use_authenticated_groups)}


# Compiled per settings object, i.e. per policy version: a reload validates new (frozen) models,
# and the entries of the old ones go away with them.
_compiled: dict[int, CompiledAcl] = {}


def compiled(settings: AclSettings, policy: "Policy | None" = None, route_name: str | None = None) -> CompiledAcl:
    """`policy` and `route_name`: the ones `settings` belong to (a settings object is one route's
    of one policy version), for the groups rule."""
    acl = _compiled.get(id(settings))
    if acl is None or acl.settings is not settings:
        acl = _compiled[id(settings)] = compile_acl(settings, policy, route_name)
        weakref.finalize(settings, _compiled.pop, id(settings), None)
    return acl


def route_acl(policy: "Policy", route_name: str | None) -> CompiledAcl | None:
    """The compiled ACL of a route, or None when the route is ungoverned."""
    route = policy.routes.get(route_name) if route_name else None
    settings = route.acl if route is not None else None
    if settings is None:
        return None
    first_use = id(settings) not in _compiled
    acl = compiled(settings, policy, route_name)
    if first_use:
        _warn_about_groups(policy, route_name, settings)
    return acl


def _warn_about_groups(policy: "Policy", route_name: str, settings: AclSettings) -> None:
    """Group names in ACL lists only match with include_consumer_groups: say so rather than let a
    `deny: [suspended]` quietly deny nobody."""
    if settings.include_consumer_groups:
        return
    lists: list[AclLists] = [*settings.default_acl, *(e.acl for e in (*settings.tools, *settings.prompts, *settings.resources)
                                                       if e.acl is not None)]
    named = {s for lst in lists for s in (*(lst.allow or ()), *(lst.deny or ()))}
    groups = sorted(s for s in named if s in policy.consumer_groups and s not in policy.consumers)
    if groups:
        log.warning("route %s: the ACL names consumer group(s) %s, which never match because "
                    "include_consumer_groups is false", route_name, ", ".join(groups))
