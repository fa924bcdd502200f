"""Plain-text reports on a policy, shared by the mitmproxy commands (`mcp.policy`, `mcp.explain`)
and the command line (`check`, `explain`), so both always say the same thing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .context import Decision
from .governance import explain as decide
from .governance.acl_settings import AclLists
from .identity.consumers import Identity, consumer_index
from .policy.models import Policy

GROUP_PREFIX = "group:"
# Route settings shown on the route's own line rather than as a section of their own.
_ROUTE_BASICS = ("service", "paths", "strip_path", "methods")


class UnknownCaller(LookupError):
    pass


def _lists(lists: AclLists) -> str:
    parts = []
    if lists.allow is not None:
        parts.append(f"allow [{', '.join(lists.allow)}]")
    if lists.deny is not None:
        parts.append(f"deny [{', '.join(lists.deny)}]")
    return "; ".join(parts) or "everyone"


def _compact(value: Any) -> str:
    """A route setting on one line. Secrets show as their reference or <redacted>."""
    if not isinstance(value, BaseModel):
        return str(value)
    try:
        dumped = value.model_dump(mode="json", exclude_defaults=True)
    except ValueError:  # a value with no JSON form: name the fields set, never their values
        return ", ".join(sorted(value.model_fields_set)) or "(defaults)"
    return ", ".join(f"{k}={v}" for k, v in dumped.items()) or "(defaults)"


def policy_summary(policy: Policy, *, source: str, digest: str, version: int | None = None) -> str:
    """Routes, services, consumers, groups and ACL rules, with the policy's digest."""
    out = [f"policy {source}", f"  sha256 {digest}" + (f"  (version {version})" if version is not None else "")]
    out.append(f"routes ({len(policy.routes)})")
    for name, route in policy.routes.items():
        svc = policy.services[route.service]
        methods = f" [{', '.join(route.methods)}]" if route.methods else ""
        out.append(f"  {name}: {', '.join(route.paths)}{methods} -> {route.service} ({svc.url})")
        for field, info in type(route).model_fields.items():
            value = getattr(route, field)
            if field in _ROUTE_BASICS or value == info.get_default(call_default_factory=True):
                continue
            if field == "acl":
                out.extend(_acl_lines(value))
            else:
                out.append(f"    {field}: {_compact(value)}")
    out.append(f"consumer groups ({len(policy.consumer_groups)}): {', '.join(policy.consumer_groups) or '-'}")
    out.append(f"consumers ({len(policy.consumers)})")
    for name, c in policy.consumers.items():
        ids = "".join(f" {k}={v}" for k, v in (("id", c.id), ("custom_id", c.custom_id)) if v)
        keys = f", {len(c.keys)} key{'s' if len(c.keys) != 1 else ''}" if c.keys else ""
        out.append(f"  {name}{ids}: groups [{', '.join(c.groups)}]{keys}")
    return "\n".join(out)


def _acl_lines(acl: Any) -> list[str]:
    mode = " (shadow: denials are recorded, not enforced)" if acl.shadow else ""
    if acl.acl_attribute_type == "oauth_access_token":  # the consumer and its groups do not count then
        subjects = f"the values of claim {acl.access_token_claim_field} of the route's validated OAuth token"
    else:
        subjects = acl.consumer_identifier + (" and consumer groups" if acl.include_consumer_groups else "")
    out = [f"    acl{mode}: subjects are {subjects}; denied calls answered as {acl.deny_response}"]
    for d in acl.default_acl:
        out.append(f"      default_acl[{d.scope}]: {_lists(d)}")
    for kind, entries in (("tools", acl.tools), ("prompts", acl.prompts), ("resources", acl.resources)):
        for entry in entries:
            key = getattr(entry, "name", None) or getattr(entry, "uri", "")
            out.append(f"      {kind}[{key}]: " + (_lists(entry.acl) if entry.acl else "default_acl"))
    return out


def resolve_caller(policy: Policy, caller: str) -> Identity:
    """A consumer by username, id or custom_id, or `group:NAME[,NAME...]` for a caller known only
    by its groups (as an OAuth token's groups claim would give)."""
    if caller.startswith(GROUP_PREFIX):
        groups = tuple(g.strip() for g in caller[len(GROUP_PREFIX):].split(",") if g.strip())
        unknown = [g for g in groups if g not in policy.consumer_groups]
        if not groups or unknown:
            known = ", ".join(policy.consumer_groups) or "none"
            raise UnknownCaller(f"unknown consumer group {', '.join(unknown) or '(none given)'} (groups: {known})")
        return Identity(caller, groups=groups, method="explain")
    index = consumer_index(policy)
    name = index.find(caller, ("username", "id", "custom_id"))
    if name is None:
        known = ", ".join(policy.consumers) or "none"
        raise UnknownCaller(f"unknown consumer {caller!r} (consumers: {known}; or use group:NAME)")
    return index.identity(name, "explain")


@dataclass(frozen=True, slots=True)
class Answer:
    route: str
    decision: Decision

    @property
    def verdict(self) -> str:
        if self.decision.allowed:
            return "ALLOWED"
        return "WOULD_DENY" if self.decision.shadow else "DENIED"

    def line(self, caller: Identity, tool: str) -> str:
        groups = f" [{', '.join(caller.groups)}]" if caller.groups else ""
        why = f"by {self.decision.rule}" if self.decision.rule else f"({self.decision.reason})"
        shadow = " (shadow mode: forwarded anyway)" if self.decision.shadow else ""
        return f"{self.route}: {caller.username}{groups} tools/call {tool} -> {self.verdict} {why}{shadow}"


def explain_tool(policy: Policy, caller: str, tool: str, route: str | None = None) -> tuple[Identity, list[Answer]]:
    """Would `caller` be allowed to call `tool`, on `route` or on every route? The decision is the
    one the gateway makes (governance.explain). Raises UnknownCaller or KeyError (route)."""
    identity = resolve_caller(policy, caller)
    if route is not None and route not in policy.routes:
        raise KeyError(f"unknown route {route!r} (routes: {', '.join(policy.routes)})")
    routes = [route] if route is not None else list(policy.routes)
    return identity, [Answer(r, decide(policy, r, identity, "tool", tool)) for r in routes]
