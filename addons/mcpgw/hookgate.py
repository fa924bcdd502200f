"""Child addons' per-flow hooks, dispatched only while they have work.

mitmproxy runs every hook event through every addon of its chain and each addon's children
(`AddonManager._iter_hooks`): it calls each one that has a method of the event's name, also when
that method returns at once. A child addon of the gateway (audit log, telemetry, LLM accounting)
with nothing to do (no audit file, no observer, no exporter, no LLM route) would still be called
on each of a flow's hook events. So each such hook is switched off by an instance attribute None
in front of the method (mitmproxy skips a falsy attribute: no call), and on again by removing
that attribute, whenever what the child needs changes: after every child has applied an option
change (`HookGate` is the last child, so its `configure` runs after theirs) and after every policy
load (its listener is added after the children's). The children keep their lifecycle hooks
(load, configure, running, done) and their commands either way."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("mcpgw.hookgate")

FLOW_HOOKS = ("requestheaders", "request", "responseheaders", "response", "error")


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


def dispatched(addon: object, hook: str) -> bool:
    """Whether mitmproxy calls `addon`'s `hook` (as _iter_hooks decides)."""
    return bool(getattr(addon, hook, None))


class HookGate:
    def __init__(self, gated: list[Gated]):
        self.gated = gated

    def configure(self, updated: set[str]) -> None:
        self.refresh()

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


def for_children(gateway) -> HookGate:
    """The gate of the gateway's child addons (audit log, telemetry, LLM accounting, token limits);
    listens to policy loads after the children that listen too."""
    from .ai.addon import LlmAddon  # the children's modules import much; the gate needs only their state
    from .limits.addon import LimitsAddon

    audit, telemetry = gateway.audit, gateway.telemetry
    llm_routes = _LlmRoutes(gateway.store)
    gated = [Gated(a, ("response", "error"), llm_routes)  # token charges are made on LLM routes only
             for a in gateway.addons if isinstance(a, (LlmAddon, LimitsAddon))]
    gate = HookGate([
        *gated,
        Gated(audit, FLOW_HOOKS, lambda: audit.writer is not None or bool(audit.observers)),
        Gated(telemetry, ("request",), lambda: telemetry.pipeline is not None or bool(telemetry.routes.pipelines)),
    ])
    gateway.store.listeners.append(gate.policy_loaded)
    return gate


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
