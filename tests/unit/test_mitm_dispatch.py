"""mitmproxy's event dispatch without idle addons (mitm_dispatch.py): what is called, in which
order, with which errors, must be what mitmproxy's own trigger_event does."""

from __future__ import annotations

import logging
import re

import pytest
from mitmproxy import addonmanager, exceptions, hooks
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons, tflow

from mcpgw import mitm_dispatch

ORIGINAL = mitm_dispatch._ORIGINAL


class Recorder:
    def __init__(self, name: str, calls: list, fail: bool = False, halt: bool = False):
        self.name, self.calls, self.fail, self.halt = name, calls, fail, halt

    def request(self, flow) -> None:
        self.calls.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} failed")
        if self.halt:
            raise exceptions.AddonHalt()


class AsyncRecorder(Recorder):
    async def request(self, flow) -> None:
        self.calls.append(self.name)


class Idle:
    """Nothing for any flow event."""


class Parent:
    def __init__(self, children: list):
        self.addons = children


class Raising:
    @property
    def request(self):
        raise ValueError("a hook lookup that fails")


class NotCallable:
    request = 42  # mitmproxy refuses it with an AddonManagerError, which safecall logs


def chain(calls: list) -> list:
    return [Idle(), Recorder("a", calls), Idle(), Parent([Idle(), Recorder("child", calls)]), AsyncRecorder("b", calls),
            Recorder("fails", calls, fail=True), Raising(), NotCallable(), Recorder("c", calls), Idle()]


async def dispatch(trigger, addons: list, caplog) -> tuple[list[str], list[str]]:
    with taddons.context() as tctx:
        manager = tctx.master.addons
        manager.chain = addons
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            await trigger(manager, HttpRequestHook(tflow.tflow()))
        return [re.sub(r"0x[0-9a-f]+", "0x", r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("halt_at", [None, "a", "child", "c"])
async def test_calls_and_errors_are_mitmproxys(caplog, halt_at):
    outcomes = []
    for trigger in (ORIGINAL, mitm_dispatch.trigger_event):
        calls: list[str] = []
        addons = chain(calls)
        for a in addonmanager.traverse(addons):
            if isinstance(a, Recorder) and a.name == halt_at:
                a.halt = True
        errors = await dispatch(trigger, addons, caplog)
        outcomes.append((calls, errors))
    assert outcomes[0] == outcomes[1]
    calls, errors = outcomes[1]
    if halt_at is None:
        assert calls == ["a", "child", "b", "fails", "c"]
        assert len(errors) == 3 and "fails failed" in errors[0]  # the failing hook, the raising lookup, the non-callable
    else:
        assert calls[-1] == halt_at  # AddonHalt ends the event there


async def test_idle_addons_are_not_visited(caplog, monkeypatch):
    visited = []
    original_invoke = addonmanager.AddonManager.invoke_addon

    async def invoke(self, addon, event):
        visited.append(type(addon).__name__)
        await original_invoke(self, addon, event)

    monkeypatch.setattr(addonmanager.AddonManager, "invoke_addon", invoke)
    calls: list[str] = []
    await dispatch(mitm_dispatch.trigger_event, [Idle(), Recorder("a", calls), Idle(), Parent([Idle()])], caplog)
    assert visited == ["Recorder", "Parent"]  # an addon with children is always walked: they may change
    assert calls == ["a"]


async def test_changes_to_the_chain_count_at_once(caplog):
    calls: list[str] = []
    late = Idle()
    addons = [Recorder("a", calls), late]
    await dispatch(mitm_dispatch.trigger_event, addons, caplog)
    late.request = lambda flow: calls.append("late")  # an addon that gains a hook at run time
    await dispatch(mitm_dispatch.trigger_event, addons, caplog)
    assert calls == ["a", "a", "late"]


def test_install_and_uninstall(monkeypatch):
    manager = addonmanager.AddonManager
    monkeypatch.setattr(manager, "trigger_event", ORIGINAL)
    undo = mitm_dispatch.install()
    assert manager.trigger_event is mitm_dispatch.trigger_event
    undo()
    assert manager.trigger_event is ORIGINAL
    monkeypatch.setattr(mitm_dispatch.version, "VERSION", "13.0.0")  # not the mitmproxy it was written against
    mitm_dispatch.install()()
    assert manager.trigger_event is ORIGINAL


async def test_lifecycle_events_still_reach_every_addon(caplog):
    """handle_lifecycle: the flow event, then `update`, each to the addons with a method for it."""
    seen = []

    class Both:
        def request(self, flow):
            seen.append("request")

        def update(self, flows):
            seen.append("update")

    with taddons.context() as tctx:
        manager = tctx.master.addons
        manager.chain = [Idle(), Both()]
        undo = mitm_dispatch.install()
        try:
            await manager.handle_lifecycle(HttpRequestHook(tflow.tflow()))
            await manager.trigger_event(hooks.UpdateHook([]))
        finally:
            undo()
    assert seen == ["request", "update", "update"]
