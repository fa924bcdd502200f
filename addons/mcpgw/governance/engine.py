"""The one decision function. Enforcement of calls, filtering of lists and `explain` all ask a
`SubjectView`, so a list can never show what a call would refuse, nor hide what it would allow.

Evaluation of one allow/deny pair, as Kong's ai-mcp-proxy documents it:
  1. the caller matches `deny`                      -> denied
  2. an `allow` list exists and the caller is not on it -> denied
  3. otherwise (only `deny`, caller not on it; or no lists) -> allowed
The pair evaluated is the primitive's own `acl` if it has one, else the `default_acl` of its scope.
The caller's subjects are its consumer_identifier value and, with include_consumer_groups, its
group names: its consumer groups, or the groups its validated token authenticated where Kong's
acl rule picks those (groups.py); with acl_attribute_type oauth_access_token, the values of a
claim of the route's validated OAuth token instead (no consumer needed)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .acl import CompiledAcl, CompiledLists, Primitive, route_acl
from .groups import is_consumer, uses_authenticated

if TYPE_CHECKING:
    from ..context import Decision
    from ..identity.consumers import Identity
    from ..policy.models import Policy

_MAX_VIEWS = 1024  # distinct subject sets per policy version kept precomputed
_MAX_CACHED_URIS = 4096


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    rule: str  # which list decided, e.g. "acl.tools[push_files].allow"


def evaluate(lists: CompiledLists, subjects: frozenset[str]) -> Verdict:
    if lists.deny and not subjects.isdisjoint(lists.deny):
        return Verdict(False, lists.where + ".deny")
    if lists.allow is not None:
        return Verdict(not subjects.isdisjoint(lists.allow), lists.where + ".allow")
    return Verdict(True, lists.where + (".deny" if lists.deny is not None else ""))


@functools.lru_cache(maxsize=256)  # a few fields per policy
def _claim_path(field: str) -> tuple[str, ...]:
    return tuple(field.removeprefix(".").split("."))


def claim_subjects(claims: dict | None, field: str) -> frozenset[str]:
    """The subjects a token claim names: a string, or the strings of a list; nothing else."""
    value: Any = claims
    for part in _claim_path(field):
        if not isinstance(value, dict):
            return frozenset()
        value = value.get(part)
    if isinstance(value, str):
        return frozenset((value,)) if value else frozenset()
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str) and v)
    return frozenset()


def subjects_of(identity: "Identity | None", acl: CompiledAcl, claims: dict | None = None) -> frozenset[str]:
    """What an ACL list entry can name for this caller. An anonymous caller has no subjects: it
    passes only ACLs without an allow list. `claims`: the validated token's, for an ACL on a
    claim; without them (no OAuth on the route, a caller that did not pass them) there are none."""
    if acl.settings.acl_attribute_type == "oauth_access_token":
        assert acl.settings.access_token_claim_field is not None
        return claim_subjects(claims, acl.settings.access_token_claim_field)
    if identity is None:
        return frozenset()
    field = acl.settings.consumer_identifier
    own = identity.username if field == "username" else identity.id if field == "consumer_id" else identity.custom_id
    subjects = {own} if own else set()
    subjects.update(groups_of(identity, acl))
    return frozenset(subjects)


def groups_of(identity: "Identity", acl: CompiledAcl) -> tuple[str, ...]:
    """The group names the ACL matches for this caller (none without include_consumer_groups): the
    token's authenticated groups where the acl rule uses them (groups.py), else its consumer groups.
    An authenticated group spelt like a consumer's name or id is dropped: the authorization server
    names groups, and a group "alice" must not pass an entry written for the consumer alice."""
    if not acl.settings.include_consumer_groups:
        return ()
    if uses_authenticated(identity, is_consumer(identity, acl.consumers), acl.always_use_authenticated_groups):
        return tuple(g for g in identity.authenticated_groups if g not in acl.consumer_subjects)
    return identity.groups


def audience(identity: "Identity | None", acl: CompiledAcl) -> str:
    """Who a denial names: the claim an ACL on a claim matched (its values are the token's, not
    repeated), the caller's groups as the ACL matched them, else the caller."""
    if acl.settings.acl_attribute_type == "oauth_access_token":
        return f"the access token's {acl.settings.access_token_claim_field}"
    if identity is None:
        return "anonymous consumers"
    groups = groups_of(identity, acl)
    if len(groups) == 1:
        return f"consumer group '{groups[0]}'"
    if groups:
        return "consumer groups " + ", ".join(f"'{g}'" for g in groups)
    return f"consumer '{identity.username}'"


class SubjectView:
    """Every verdict of one compiled ACL for one set of subjects, computed up front for the named
    primitives; a tool lookup on the hot path is one dict access."""

    __slots__ = ("acl", "subjects", "tools", "prompts", "default_tool", "default_prompt", "default_resource",
                 "_exact_resources", "_resource_patterns", "_resource_cache")

    def __init__(self, acl: CompiledAcl, subjects: frozenset[str]):
        self.acl = acl
        self.subjects = subjects
        self.tools = {name: evaluate(lists, subjects) for name, lists in acl.tools.items()}
        self.prompts = {name: evaluate(lists, subjects) for name, lists in acl.prompts.items()}
        self.default_tool = evaluate(acl.defaults["tool"], subjects)
        self.default_prompt = evaluate(acl.defaults["prompt"], subjects)
        self.default_resource = evaluate(acl.defaults["resource"], subjects)
        self._exact_resources = {uri: evaluate(lists, subjects) for uri, lists in acl.resources.items()}
        self._resource_patterns = tuple((rx, evaluate(lists, subjects)) for rx, lists in acl.resource_patterns)
        self._resource_cache: dict[str, Verdict] = {}

    def tool(self, name: str) -> Verdict:
        return self.tools.get(name, self.default_tool)

    def prompt(self, name: str) -> Verdict:
        return self.prompts.get(name, self.default_prompt)

    def resource(self, uri: str) -> Verdict:
        """Exact URI entries first, then patterns in the order written, then the default."""
        verdict = self._resource_cache.get(uri)
        if verdict is None:
            verdict = self._exact_resources.get(uri)
            if verdict is None:
                verdict = next((v for rx, v in self._resource_patterns if rx.match(uri)), self.default_resource)
            if len(self._resource_cache) >= _MAX_CACHED_URIS:
                self._resource_cache.clear()
            self._resource_cache[uri] = verdict
        return verdict

    def decide(self, primitive: Primitive, name: str) -> Verdict:
        if primitive == "tool":
            return self.tool(name)
        if primitive == "prompt":
            return self.prompt(name)
        if primitive == "resource":
            return self.resource(name)
        raise ValueError(f"unknown primitive {primitive!r}")


def view(acl: CompiledAcl, identity: "Identity | None", claims: dict | None = None) -> SubjectView:
    subjects = subjects_of(identity, acl, claims)
    found = acl.views.get(subjects)
    if found is None:
        if len(acl.views) >= _MAX_VIEWS:
            acl.views.clear()
        found = acl.views[subjects] = SubjectView(acl, subjects)
    return found


def explain(policy: "Policy", route_name: str, identity: "Identity | None", primitive: Primitive, name: str,
            claims: dict | None = None) -> "Decision":
    """What the gateway decides when `identity` uses primitive `name` on `route_name` under
    `policy`: the same decision enforcement and list filtering make. A route without an `acl` is
    ungoverned: everything is allowed. Raises KeyError for an unknown route."""
    from ..context import Decision  # context imports the policy models, which import this package

    if route_name not in policy.routes:
        raise KeyError(f"no route named {route_name!r}")
    acl = route_acl(policy, route_name)
    if acl is None:
        return Decision(True, primitive=primitive, name=name, reason="no acl")
    verdict = view(acl, identity, claims).decide(primitive, name)
    return Decision(verdict.allowed, primitive=primitive, name=name, rule=verdict.rule, reason="acl",
                    shadow=acl.shadow and not verdict.allowed)
