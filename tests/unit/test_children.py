"""The gateway calls its child addons itself (children.py): mitmproxy sees no children, every
hook a child has is handed on, in the children's order, and a per-flow hook is called only while
it has work, coming back as soon as an option or a policy gives it some: an audit file, metrics,
an LLM route."""

import json

from mitmproxy.proxy.layers.http import HttpRequestHeadersHook, HttpRequestHook, HttpResponseHook
from mitmproxy.test import tutils

from mitmproxy import hooks
from mitmproxy.addonmanager import traverse
from mitmproxy.proxy import layers, server_hooks  # noqa: F401 - register every hook in hooks.all_hooks

from mcpgw import children
from mcpgw.addon import MCPGateway
from mcpgw.ai.addon import LlmAddon
from mcpgw.limits.addon import LimitsAddon
from tests.support.procs import free_port
from tests.unit.test_addon import POLICY, gateway, reverse_flow  # noqa: F401 - gateway: the fixture

LLM_ROUTE = "  llm: {service: gh, paths: [/llm], ai: {route_type: llm/v1/chat}}\n"


def called(tctx, addon: MCPGateway, hook) -> set[type]:
    """The addons called for this event: those mitmproxy calls, and the children the gateway calls."""
    by_mitmproxy = {type(a) for a, _ in tctx.master.addons._iter_hooks(addon, hook)}
    return by_mitmproxy | {type(h.__self__) for h in addon.children.hooks(hook.name)}


async def run_flow(tctx):
    f = reverse_flow(path="/github-mcp")
    f.request.content = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    for hook in (HttpRequestHeadersHook, HttpRequestHook):
        await tctx.master.addons.handle_lifecycle(hook(f))
    assert f.response is None  # forwarded
    f.response = tutils.tresp(content=b'{"jsonrpc":"2.0","id":1,"result":{}}')
    f.response.headers["Content-Type"] = "application/json"
    await tctx.master.addons.handle_lifecycle(HttpResponseHook(f))
    return f


def test_nothing_to_do_means_no_call(gateway):
    addon, tctx, _ = gateway
    f = reverse_flow()
    for hook in (HttpRequestHeadersHook(f), HttpRequestHook(f), HttpResponseHook(f)):
        assert called(tctx, addon, hook) & {type(addon.audit), type(addon.telemetry), LlmAddon, LimitsAddon} == set()
    assert MCPGateway in called(tctx, addon, HttpRequestHeadersHook(f))  # the gateway's own hooks always run
    assert not children.dispatched(addon.children, addon.audit, "response")


async def test_an_audit_file_switches_the_audit_hooks_on_and_off(gateway, tmp_path):
    addon, tctx, _ = gateway
    audit = tmp_path / "audit.jsonl"
    tctx.options.update(mcp_audit=str(audit))
    f = reverse_flow()
    assert type(addon.audit) in called(tctx, addon, HttpRequestHeadersHook(f))
    assert type(addon.audit) in called(tctx, addon, HttpResponseHook(f))
    await run_flow(tctx)
    addon.audit.writer.close()  # flushes the writer thread
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["jsonrpc"]["method"], r["http"]["status"]) for r in records] == [("ping", 200)]
    tctx.options.update(mcp_audit="")
    assert type(addon.audit) not in called(tctx, addon, HttpResponseHook(f))


def test_metrics_make_the_audit_log_build_records(gateway):
    addon, tctx, _ = gateway
    tctx.options.update(mcp_metrics=str(free_port()))
    try:
        assert type(addon.audit) in called(tctx, addon, HttpRequestHeadersHook(reverse_flow()))
    finally:
        tctx.options.update(mcp_metrics="")
    assert type(addon.audit) not in called(tctx, addon, HttpRequestHeadersHook(reverse_flow()))


def test_an_llm_route_switches_llm_accounting_and_token_charges_on_for_good(gateway):
    addon, tctx, path = gateway
    f = reverse_flow()
    path.write_text(POLICY + LLM_ROUTE)
    addon.store.reload(force=True)  # what the watcher does: a policy load without an option change
    assert {LlmAddon, LimitsAddon} <= called(tctx, addon, HttpResponseHook(f))
    path.write_text(POLICY)
    addon.store.reload(force=True)
    assert {LlmAddon, LimitsAddon} <= called(tctx, addon, HttpResponseHook(f))  # a flow begun before may still end


def test_a_gate_that_cannot_tell_leaves_the_hooks_on():
    class Child:
        def response(self, flow):
            return None

    child = Child()
    gate = children.Children([child], [children.Gated(child, ("response",), lambda: 1 / 0)])
    children.switch(child, ("response",), False)
    gate._rebuild()
    assert not children.dispatched(gate, child, "response")
    gate.refresh()
    assert children.dispatched(gate, child, "response")


def test_mitmproxy_sees_no_child_and_every_child_hook_is_handed_on(gateway):
    addon, tctx, _ = gateway
    assert list(traverse([addon])) == [addon]  # no generator walk per child on each event
    events = set(hooks.all_hooks) | {"load", "configure", "running", "done", "update"}
    for child in addon.children.addons:
        for event in events - {"load"}:  # load: run by Children.load, with the commands
            if callable(getattr(type(child), event, None)):
                assert event in children.FORWARDED, (type(child).__name__, event)
    for event in children.FORWARDED:
        assert callable(getattr(MCPGateway, event, None)), event  # the gateway hands it on


def test_children_keep_their_commands_and_options(gateway):
    addon, tctx, _ = gateway
    assert {"mcp.reload", "mcp.policy", "mcp.explain", "mcp.audit.reopen"} <= set(tctx.master.commands.commands)
    assert {"mcp_audit", "mcp_metrics", "mcp_otlp"} <= set(tctx.options.keys())


async def test_children_are_called_in_order_after_the_gateway(gateway):
    addon, tctx, _ = gateway
    seen = []

    class First:
        def response(self, flow):
            seen.append(("first", flow.response is not None))

    class Second:
        def response(self, flow):
            seen.append(("second", flow.response is not None))

    addon.children.addons += [First(), Second()]
    addon.children.refresh()
    f = await run_flow(tctx)
    assert seen == [("first", True), ("second", True)]
    assert f.response.status_code == 200


async def test_a_failing_child_stops_that_event_there_as_mitmproxy_would(gateway, caplog):
    addon, tctx, _ = gateway
    seen = []

    class Failing:
        def response(self, flow):
            raise RuntimeError("child failed")

    class After:
        def response(self, flow):
            seen.append("after")

    addon.children.addons += [Failing(), After()]
    addon.children.refresh()
    f = await run_flow(tctx)  # mitmproxy's safecall logs the error; the flow goes on
    assert seen == []
    assert "child failed" in caplog.text
    assert f.response.status_code == 200


async def test_an_awaitable_a_child_returns_is_awaited_before_the_next_child(gateway):
    addon, tctx, _ = gateway
    seen = []

    class Retrying:  # as the LLM accounting's response does when it retries an answer
        def response(self, flow):
            async def later():
                seen.append("retried")
            return later()

    class After:
        def response(self, flow):
            seen.append("after")

    addon.children.addons += [Retrying(), After()]
    addon.children.refresh()
    await run_flow(tctx)  # mitmproxy awaits what the gateway's sync response returned
    assert seen == ["retried", "after"]
