"""mitmproxy options: the ones the gateway relies on, and names nobody knows.

Required options are set when the gateway's script loads. mitmproxy loads `-s` scripts before it
opens its listeners, so no connection is ever handled under other values (with the default eager
connection strategy, a client connecting in the first milliseconds had mitmproxy dial the
`reverse:` placeholder and was dropped); from then on a change is refused.

mitmproxy keeps a `--set` name it does not know aside, in case an addon registers it later, and
says nothing: with `--set mcp_polciy=...` the gateway would run its default policy while the
operator believes another is in force. `mistyped` finds such a name: one in the gateway's
namespace (`mcp...`) or close to one of its options. (A later script's own option that happens to
be that close is reported too: list that script before the gateway's.)"""

from __future__ import annotations

import difflib

from mitmproxy import exceptions, optmanager

# mitmproxy options the gateway relies on, and why. Set when the gateway loads; refused after.
REQUIRED_OPTIONS = {
    "keep_host_header": True,  # gateway mode must see the Host the client sent (DNS-rebinding check, public URLs)
    "connection_strategy": "lazy",  # the upstream is chosen per request by the policy, not by the listener
    "stream_large_bodies": None,  # would forward request bodies before they are inspected; the gateway streams responses itself
}
PREFIX = "mcp_"
CLOSE = 0.8  # difflib ratio from which an unknown name counts as a misspelling of a gateway option


def enforce(options: optmanager.OptManager) -> dict[str, object]:
    """Set every required option mitmproxy has declared. Returns the ones that changed."""
    changed = {k: v for k, v in REQUIRED_OPTIONS.items() if k in options and getattr(options, k) != v}
    if changed:
        options.update(**changed)
    return changed


def refuse_changes(options: optmanager.OptManager, updated: set[str]) -> None:
    for name, value in REQUIRED_OPTIONS.items():
        if name in updated and name in options and getattr(options, name) != value:
            raise exceptions.OptionsError(f"the MCP gateway requires {name}={value!r}")


def mistyped(options: optmanager.OptManager) -> tuple[str, str] | None:
    """The first unknown option meant for the gateway, and a message naming the closest real one."""
    ours = sorted(n for n in options.keys() if n.startswith(PREFIX))
    for name in options.deferred:
        folded = name.lower().replace("-", "_")
        close = difflib.get_close_matches(folded, ours, n=1, cutoff=CLOSE)
        if close or folded.startswith("mcp"):
            hint = f"did you mean {close[0]}?" if close else f"the gateway's options are {', '.join(ours)}"
            return name, f"unknown option {name!r}: {hint}"
    return None
