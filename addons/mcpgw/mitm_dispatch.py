"""mitmproxy's event dispatch without visiting addons that have nothing for the event.

`AddonManager.trigger_event` hands every event to every addon of the chain: for each one it
enters `safecall`, creates and awaits an `invoke_addon` coroutine and walks `traverse` and
`_iter_hooks` generators, whether or not the addon has a method for the event. mitmdump's chain
holds about 35 addons, and every flow event is followed by an `update` event through the same
chain, so a governed request pays for about 280 such visits, most of them to addons (replay, map,
modify, export, ...) with no method for the event at all: about 0.7 ms of CPU per request on a
2-core machine, a third of what mitmdump spends on it (docs/performance.md, "mitmproxy's
dispatch").

`install` replaces `trigger_event` with one that skips an addon exactly when mitmproxy's own
would find nothing to call on it: no `addons` attribute (so no children to walk) and no truthy
attribute named after the event (`_iter_hooks` calls only those). Every other addon goes through
mitmproxy's own `invoke_addon` inside its own `safecall`, in chain order, so hooks run, fail and
halt (`AddonHalt`) as before; the test is made on each event, so addons added, removed or changed
at run time count at once. An attribute lookup that raises is left to mitmproxy's path, which
logs it as it would. Written against mitmproxy 12; `install` checks the parts it relies on and
otherwise leaves mitmproxy as it is."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable

from mitmproxy import addonmanager, exceptions, version

log = logging.getLogger("mcpgw.mitm_dispatch")

_Manager = addonmanager.AddonManager
# mitmproxy's own, kept on the class: a script reload re-imports this module, not mitmproxy
_ORIGINAL = getattr(_Manager, "_mcpgw_trigger_event", _Manager.trigger_event)


def _idle(addon: object, name: str) -> bool:
    """Whether mitmproxy's invoke_addon would call nothing on `addon` for event `name`."""
    try:
        return not hasattr(addon, "addons") and not getattr(addon, name, None)
    except Exception:  # (a property that raises): mitmproxy's path meets it and logs it
        return False


async def trigger_event(self: addonmanager.AddonManager, event) -> None:
    """AddonManager.trigger_event, visiting only the addons that may handle `event`."""
    name = event.name
    for addon in self.chain:
        if _idle(addon, name):
            continue
        try:
            with addonmanager.safecall():
                await self.invoke_addon(addon, event)
        except exceptions.AddonHalt:
            return


def _compatible() -> bool:
    if not version.VERSION.startswith("12."):
        return False
    parts = (getattr(_Manager, "invoke_addon", None), getattr(addonmanager, "safecall", None), _ORIGINAL)
    if not all(callable(p) for p in parts) or not inspect.iscoroutinefunction(_ORIGINAL):
        return False
    return list(inspect.signature(_ORIGINAL).parameters) == ["self", "event"]


def install() -> Callable[[], None]:
    """Dispatch events through `trigger_event` from now on; returns the undo."""
    if not _compatible():
        log.warning("mitmproxy %s: its event dispatch is left as it is (written against mitmproxy 12)",
                    version.VERSION)
        return lambda: None
    _Manager._mcpgw_trigger_event = _ORIGINAL
    _Manager.trigger_event = trigger_event

    def uninstall() -> None:
        if _Manager.trigger_event is trigger_event:
            _Manager.trigger_event = _ORIGINAL

    return uninstall
