"""The gateway's child addons (audit log, metrics, console, destinations, telemetry, ...), called by
the gateway itself, and each per-flow hook only while it has work.

mitmproxy hands every hook event to every addon of its chain and, recursively, to each addon's
`addons` (`AddonManager._iter_hooks` over `traverse`). A script's addon sits four generators
deep (script loader, script, module, addon), so each child of it costs five generator resumes
and a getattr on every event of every flow, whether or not it has that hook, and each one called
gets the event's arguments rebuilt (`Hook.args`, a `dataclasses.fields` walk). So the gateway
shows mitmproxy no children. `Children` keeps them: it runs their `load` (their options) and
registers their commands, and the gateway hands each event on to the children that have a hook
for it, after its own handling and in the children's order: the order mitmproxy's traversal
would have used. An exception in a child ends that event's dispatch there and reaches mitmproxy,
which logs it, as it does for an addon's children; an awaitable a child's hook returns is
awaited before the next child's, as mitmproxy would.

A child's per-flow hook with nothing to do (no audit file, no observer, no exporter, no LLM route)
is switched off by an instance attribute None in front of the method and left out of the
dispatch table, which is rebuilt after every option change (once every child has applied it) and
after every policy load. Lifecycle hooks (configure, running, done) and commands stay either way."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("mcpgw.children")

FLOW_HOOKS = ("requestheaders", "request", "responseheaders", "response", "error")
# Every hook a child may have; MCPGateway has a method for each that hands it on (a unit test
# checks both ways: no child hook outside this list, no name here the gateway does not hand on).
FORWARDED = ("configure", "running", "done", *FLOW_HOOKS, "next_layer", "http_connect", "http_connect_upstream",
             "server_connect", "server_connected", "server_connect_error")


@dataclass(frozen=True)
class Gated:
    addon: object
    hooks: tuple[str, ...]
    needed: Callable[[], bool]  # whether the hooks have work now; asked on every change, never per flow


def switch(addon: object, hooks: tuple[str, ...], on: bool) -> None:
    for name in hooks:
        if on:
            vars(addon).pop(name, None)  # the class's method again
        elif getattr(type(addon), name, None) is not None:
            setattr(addon, name, None)


class Children:
    def __init__(self, addons: list, gated: list[Gated]):
        self.addons = addons
        self.gated = gated
        self._table: dict[str, tuple[Callable, ...]] = {}
        self._rebuild()

    def load(self, loader, master) -> None:
        """What mitmproxy does for an addon's children when it registers the addon."""
        for addon in self.addons:
            if (hook := getattr(addon, "load", None)) is not None:
                hook(loader)
        for addon in self.addons:
            master.commands.collect_commands(addon)

    def hooks(self, event: str) -> tuple[Callable, ...]:
        """The children's hooks the gateway calls for `event`, in order."""
        return self._table.get(event, ())

    def call(self, event: str, *args):
        """Call the children's hooks for `event` in order. A hook may return an awaitable, as
        mitmproxy allows (the LLM accounting does, to retry an answer): then the rest is a
        coroutine, returned for the caller to hand to mitmproxy, which awaits it before the next
        addon as it would have awaited the child's."""
        hooks = self._table.get(event, ())
        for i, hook in enumerate(hooks):
            result = hook(*args)
            if result is not None and inspect.isawaitable(result):
                return self._rest(result, hooks[i + 1:], args)
        return None

    @staticmethod
    async def _rest(pending, hooks: tuple[Callable, ...], args: tuple) -> None:
        await pending
        for hook in hooks:
            result = hook(*args)
            if result is not None and inspect.isawaitable(result):
                await result

    async def call_async(self, event: str, *args) -> None:
        if (pending := self.call(event, *args)) is not None:
            await pending

    def configure(self, updated: set[str]) -> None:
        self.call("configure", updated)
        self.refresh()  # after every child applied the change

    def policy_loaded(self, snap, err) -> None:
        self.refresh()

    def refresh(self) -> None:
        for g in self.gated:
            try:
                on = g.needed()
            except Exception:  # never lose a record for want of an answer: dispatched is the safe side
                log.exception("could not tell whether %s has work; its hooks stay on", type(g.addon).__name__)
                on = True
            switch(g.addon, g.hooks, on)
        self._rebuild()

    def _rebuild(self) -> None:
        table = {}
        for event in FORWARDED:
            found = tuple(hook for addon in self.addons if callable(hook := getattr(addon, event, None)))
            if found:
                table[event] = found
        self._table = table  # replaced whole: a hook running now keeps the tuple it began with


def dispatched(children: Children, addon: object, event: str) -> bool:
    """Whether the gateway calls `addon`'s hook for `event`."""
    return any(getattr(hook, "__self__", None) is addon for hook in children.hooks(event))


def for_gateway(gateway, addons: list) -> Children:
    """The gateway's children, with their per-flow hooks gated (audit log, telemetry, LLM accounting,
    token limits); listens to policy loads after the children that listen too."""
    from .ai.addon import LlmAddon  # the children's modules import much; the gate needs only their state
    from .limits.addon import LimitsAddon

    audit, telemetry = gateway.audit, gateway.telemetry
    llm_routes = _LlmRoutes(gateway.store)
    gated = [Gated(a, ("response", "error"), llm_routes)  # token charges are made on LLM routes only
             for a in addons if isinstance(a, (LlmAddon, LimitsAddon))]
    children = Children(addons, [
        *gated,
        Gated(audit, FLOW_HOOKS, lambda: audit.writer is not None or bool(audit.observers)),
        Gated(telemetry, ("request",), lambda: telemetry.pipeline is not None or bool(telemetry.routes.pipelines)),
    ])
    gateway.store.listeners.append(children.policy_loaded)
    return children


class _LlmRoutes:
    """LLM accounting has work from the first policy with an LLM route on, for good: a flow begun
    under that policy may end under the next one."""

    def __init__(self, store) -> None:
        self.store, self.seen = store, False

    def __call__(self) -> bool:
        snap = self.store.current
        if not self.seen and snap is not None:
            self.seen = any(getattr(r, "ai", None) is not None for r in snap.policy.routes.values())
        return self.seen
