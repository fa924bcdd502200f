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
