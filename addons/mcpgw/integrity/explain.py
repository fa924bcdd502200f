"""What tool integrity would do with a call, for `mcp.explain` (mitmweb / mitmdump console): the
ACL answers who may call a tool; this answers whether the tool itself is held back, as the
running gateway knows it (pins, the definition it saw last, the scan's verdict)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .pinning import judge_call, observed, store_for
from .scanning import blocked

if TYPE_CHECKING:
    from ..policy.store import Snapshot


def lines(snapshot: "Snapshot", tool: str, route: str | None = None) -> list[str]:
    out = []
    for name, r in snapshot.policy.routes.items():
        settings = r.integrity
        if (route is not None and name != route) or settings is None or not settings.active:
            continue
        verdicts = []
        if settings.pin != "off":
            found = judge_call(store_for(snapshot, name, settings), name, tool, settings)
            seen = observed.get((name, tool))
            if found is not None:
                verdicts.append(f"pin: {'WOULD_DENY (shadow)' if settings.pin == 'shadow' else 'DENIED'}, {found.reason()}")
            else:
                verdicts.append("pin: allowed" + (f" (listed as {seen.digest[:12]}, matching its pin)" if seen else
                                                  " (not listed yet: pinned when first listed)"))
        entry = blocked.get((name, tool)) if settings.scan is not None and settings.scan.mode != "off" else None
        if entry is not None:
            verdicts.append(f"scan: DENIED, its definition looks poisoned ({', '.join(entry[1])})")
        elif settings.scan is not None and settings.scan.mode != "off":
            verdicts.append("scan: allowed (no blocking finding in the last list)")
        if settings.secrets is not None and settings.secrets.mode != "off":
            verdicts.append(f"secrets: arguments {settings.secrets.arguments}, results {settings.secrets.results}"
                            + (" (shadow)" if settings.secrets.mode == "shadow" else ""))
        out.append(f"route {name}: integrity of {tool}: " + "; ".join(verdicts))
    return out


# -- `mcp-gateway explain` (cli.py): no running gateway, so from the policy, its pin files and,
#    with --live, the route's catalog as its upstream lists it now ---------------------------------

def offline(policy, source: str, tool: str, route: str | None = None, live: bool = False,
            headers: dict[str, str] | None = None) -> tuple[list[str], bool]:
    """(one line per route with integrity, whether integrity would refuse a call of `tool`)."""
    out, refused = [], False
    for name, r in policy.routes.items():
        settings = r.integrity
        if (route is not None and name != route) or settings is None or not settings.active:
            continue
        catalog, problem = _catalog(policy, r, headers) if live else (None, None)
        definition = next((t for t in catalog if t.get("name") == tool), {}) if catalog is not None else None
        verdicts = []
        if settings.pin != "off":
            text, denied = _pin(policy, source, name, settings, tool, definition, live and problem is None)
            verdicts.append(text)
            refused |= denied and settings.pin == "enforce"
        if settings.scan is not None and settings.scan.mode != "off":
            text, denied = _scan(source, settings.scan, definition, catalog)
            verdicts.append(text)
            refused |= denied
        if settings.secrets is not None and settings.secrets.mode != "off":
            verdicts.append(f"secrets: arguments {settings.secrets.arguments}, results {settings.secrets.results}"
                            + (" (shadow)" if settings.secrets.mode == "shadow" else ""))
        if problem:
            verdicts.append(f"(catalog not read: {problem})")
        out.append(f"route {name}: integrity of {tool}: " + "; ".join(verdicts))
    return out, refused


def _catalog(policy, route, headers: dict[str, str] | None):
    import httpx

    from .catalog import CatalogError, fetch_tools, route_headers

    try:
        return fetch_tools(policy.services[route.service].url, headers if headers else route_headers(route)), None
    except (CatalogError, httpx.HTTPError, ValueError) as e:
        return None, str(e) or type(e).__name__


def _pin(policy, source: str, route: str, settings, tool: str, definition, live: bool) -> tuple[str, bool]:
    from ..state.pins import FilePinStore
    from .digest import changed_fields, field_digests, tool_digest
    from .lockfile import read
    from .pinning import _beside_policy, lock_path

    mode = "shadow: only recorded" if settings.pin == "shadow" else "enforce"
    state = policy.gateway.state
    if settings.pins == "lock":
        path = lock_path(source, settings)
        pin, where = read(path).get(route, {}).get(tool), f"lock file {path.name}"
    elif settings.pin_store:
        path = _beside_policy(source, settings.pin_store)
        pin, where = (FilePinStore(path).get(route, tool) if path.exists() else None), f"pin file {path.name}"
    else:
        shared = state.backend == "redis"
        return (f"pin ({mode}, trust on first use, pins in {'Redis, shared' if shared else 'each process memory'}): "
                "the first definition a gateway lists is pinned, a later different one withheld"), False
    if pin is None:
        if settings.pins == "lock":
            return f"pin ({mode}): DENIED, no pin in the {where}: withheld from lists, calls refused", True
        return f"pin ({mode}, trust on first use): not pinned yet in the {where}: pinned when first listed", False
    approved = f"pin ({mode}): approved as {pin['digest'][:12]} in the {where}"
    if not live:
        return approved + "; a listed definition with another digest is withheld and its calls refused", False
    if not definition:
        return approved + "; the upstream does not list it now", False
    if tool_digest(definition) == pin["digest"]:
        return approved + "; listed now as approved", False
    fields = changed_fields(pin.get("fields") or {}, field_digests(definition))
    return f"pin ({mode}): DENIED, listed now with {', '.join(fields) or 'its definition'} changed since it was " \
           f"approved ({pin['digest'][:12]} in the {where}): withheld from lists, calls refused", True


def _scan(source: str, scan, definition, catalog) -> tuple[str, bool]:
    from .scanning import scanner_for

    blocking = sorted(s for s, a in scan.actions.items() if a == "block") if scan.mode == "enforce" else []
    rule = f"scan ({scan.mode}{'; ' + '/'.join(blocking) + ' findings block' if blocking else ''})"
    if not definition:
        return rule + ": the definition is judged when it is listed", False
    found = scanner_for(source, scan.rules_file).scan_list(catalog).get(definition["name"], ())  # with its list: cross-tool rules
    if not found:
        return rule + ": no finding in the listed definition", False
    blocks = [f.rule for f in found if scan.action(f.severity) == "block"]
    listed = ", ".join(f"{f.rule}:{f.severity}" for f in found)
    return (f"scan: DENIED, its definition looks poisoned ({listed})", True) if blocks else \
        (f"scan: flagged ({listed})", False)
