"""Child addons' per-flow hooks are dispatched only while they have work (hookgate.py), as
mitmproxy's own dispatch enumerates them, and come back as soon as an option or a policy gives
them work: an audit file, metrics, an LLM route."""

import json

from mitmproxy.proxy.layers.http import HttpRequestHeadersHook, HttpRequestHook, HttpResponseHook
from mitmproxy.test import tutils

from mcpgw import hookgate
from mcpgw.addon import MCPGateway
from mcpgw.ai.addon import LlmAddon
from mcpgw.limits.addon import LimitsAddon
from tests.support.procs import free_port
from tests.unit.test_addon import POLICY, gateway, reverse_flow  # noqa: F401 - gateway: the fixture

LLM_ROUTE = "  llm: {service: gh, paths: [/llm], ai: {route_type: llm/v1/chat}}\n"


def called(tctx, addon: MCPGateway, hook) -> set[type]:
    """The addons of the gateway's tree that mitmproxy calls for this event."""
    return {type(a) for a, _ in tctx.master.addons._iter_hooks(addon, hook)}


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
    assert not hookgate.dispatched(addon.audit, "response")


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
    gate = hookgate.HookGate([hookgate.Gated(child, ("response",), lambda: 1 / 0)])
    hookgate.switch(child, ("response",), False)
    assert not hookgate.dispatched(child, "response")
    gate.refresh()
    assert hookgate.dispatched(child, "response")
