"""The addon's hooks with mitmproxy's test helpers: routing decisions and failing closed."""

import pytest
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from mcpgw import context, pipeline
from mcpgw.addon import MCPGateway

POLICY = """
gateway: {intercept_unmatched: pass}
services:
  gh: {url: "https://api.githubcopilot.com/mcp"}
routes:
  github-mcp: {service: gh, paths: [/github-mcp]}
"""
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'


@pytest.fixture
def gateway(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    addon = MCPGateway()
    with taddons.context(Proxyserver(), addon) as tctx:  # proxyserver declares keep_host_header & co
        tctx.configure(addon, mcp_policy=str(path), keep_host_header=True)
        yield addon, tctx, path


def reverse_flow(path: str = "/github-mcp", host: str = "localhost:8443", method: str = "POST"):
    f = tflow.tflow()
    f.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:9@8443")
    f.client_conn.timestamp_tls_setup = None  # plain HTTP on the gateway listener
    f.request.method, f.request.path, f.request.host, f.request.port = method, path, "127.0.0.1", 9
    f.request.headers["Host"] = host
    f.request.headers["Content-Type"] = "application/json"
    f.request.content = BODY
    return f


def intercept_flow(url: str):
    f = tflow.tflow()
    f.client_conn.proxy_mode = ProxyMode.parse("regular")
    f.request.url = url
    f.request.method = "POST"
    f.request.headers["Content-Type"] = "application/json"
    f.request.content = BODY
    return f


async def through(addon: MCPGateway, f):
    await addon.requestheaders(f)
    await addon.request(f)
    return f


async def test_gateway_mode_routes_to_the_service_whatever_the_listener_target(gateway):
    addon, _, _ = gateway
    f = await through(addon, reverse_flow("/github-mcp/x?y=1"))
    assert f.response is None
    assert f.request.url == "https://api.githubcopilot.com/mcp/x?y=1"
    assert f.request.headers["Host"] == "api.githubcopilot.com"
    absolute = reverse_flow("/github-mcp")
    absolute.request.authority = "attacker.example:443"  # an absolute-form target chooses nothing
    await through(addon, absolute)
    assert absolute.request.authority == "" and absolute.request.host == "api.githubcopilot.com"
    assert context.get(f).route_url == "http://localhost:8443/github-mcp"
    tls = reverse_flow()
    tls.client_conn.timestamp_tls_setup = 1.0  # TLS: the public URL follows the listener the client used
    await through(addon, tls)
    assert context.get(tls).prm_url == "https://localhost:8443/.well-known/oauth-protected-resource/github-mcp"


async def test_the_flow_context_stays_out_of_saved_and_copied_flows(gateway):
    addon, _, _ = gateway
    f = await through(addon, reverse_flow("/github-mcp"))
    assert context.get(f) is not None
    state = f.get_state()  # what -w and mitmweb's export write
    assert "_mcp_gateway_context" not in repr(state)
    assert context.get(f.copy()) is None  # a replayed copy is governed afresh


async def test_unknown_path_and_foreign_host_are_answered_not_forwarded(gateway):
    addon, _, _ = gateway
    f = await through(addon, reverse_flow("/elsewhere"))
    assert f.response.status_code == 404 and f.request.host == "127.0.0.1"
    f = await through(addon, reverse_flow(host="attacker.example:8443"))
    assert f.response.status_code == 403 and b"forbidden_host" in f.response.content


async def test_a_failing_phase_fails_closed(gateway, monkeypatch):
    addon, _, _ = gateway

    def broken(ctx, flow):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(pipeline, "REQUEST_PHASES", (broken, *pipeline.REQUEST_PHASES))
    f = await through(addon, reverse_flow())
    assert f.response.status_code == 500 and b"Nothing was forwarded" in f.response.content
    assert f.request.host == "127.0.0.1"  # never pointed at the upstream


async def test_request_streaming_is_refused_on_governed_routes(gateway):
    addon, _, _ = gateway
    f = reverse_flow()
    await addon.requestheaders(f)
    f.request.stream = True  # as if something re-enabled streaming after the gateway's hook
    await addon.request(f)
    assert f.response.status_code == 500


async def test_declared_oversize_body_refused_before_reading(gateway):
    addon, _, _ = gateway
    f = reverse_flow()
    f.request.headers["Content-Length"] = str(5 * 1024 * 1024)
    await addon.requestheaders(f)
    assert f.response.status_code == 413


async def test_gateway_mode_needs_the_client_host(gateway):
    from mitmproxy import exceptions

    addon, tctx, _ = gateway
    with pytest.raises(exceptions.OptionsError, match="requires keep_host_header=True"):
        tctx.options.keep_host_header = False  # refused from the moment the gateway loaded
    tctx.options._options["keep_host_header"].set(False)  # forced past the refusal: still no traffic
    f = await through(addon, reverse_flow())
    assert f.response.status_code == 503


async def test_intercept_mode_governs_the_service_url_and_passes_the_rest(gateway):
    addon, tctx, path = gateway
    governed = await through(addon, intercept_flow("https://api.githubcopilot.com/mcp"))
    assert context.get(governed) is not None and governed.response is None
    assert governed.request.url == "https://api.githubcopilot.com/mcp"
    # On a port no service uses (nothing to resolve): an origin the policy does not govern.
    other = await through(addon, intercept_flow("https://example.com:8443/mcp"))
    assert context.get(other) is None and other.response is None
    # The governed origin answers its routes' paths only (tests/unit/test_destinations.py has more).
    elsewhere = await through(addon, intercept_flow("https://api.githubcopilot.com/other"))
    assert elsewhere.response.status_code == 403 and elsewhere.response.json()["error"] == "unrouted_path"
    path.write_text(POLICY.replace("pass", "block"))
    addon.store.reload()
    blocked = await through(addon, intercept_flow("https://example.com:8443/mcp"))
    assert blocked.response.status_code == 403


async def test_no_policy_means_no_traffic(tmp_path):
    addon = MCPGateway()
    with taddons.context(Proxyserver(), addon) as tctx:
        tctx.configure(addon, mcp_policy=str(tmp_path / "missing.yaml"))
        f = await through(addon, reverse_flow())
        assert f.response.status_code == 503


async def test_invalid_policy_change_at_runtime_is_refused_and_old_one_kept(gateway):
    from mitmproxy import exceptions

    addon, tctx, path = gateway
    first = addon.store.current
    addon._running = True
    bad = path.with_name("bad.yaml")
    bad.write_text("routes: {}")
    with pytest.raises(exceptions.OptionsError):
        tctx.configure(addon, mcp_policy=str(bad))
    assert addon.store.current.digest == first.digest and addon.store.path == first.files[0]


async def test_refusal_at_response_headers_never_carries_the_upstream_body(gateway, monkeypatch):
    """mitmproxy keeps reading the upstream body into flow.response after responseheaders: a
    replacement must send its own body and discard the upstream's."""
    from mcpgw.responses import json_response

    addon, _, _ = gateway
    monkeypatch.setattr(pipeline, "RESPONSE_HEADER_PHASES",
                        (lambda ctx, flow: json_response(502, {"message": "refused"}),))
    f = await through(addon, reverse_flow())
    f.response = tflow.tresp()
    addon.responseheaders(f)
    assert f.response.status_code == 502
    sent = f.response.stream(b"upstream secret body") + f.response.stream(b"more") + f.response.stream(b"")
    assert b"".join(sent) == b'{"message":"refused"}' == f.response.raw_content
    assert int(f.response.headers["content-length"]) == len(b"".join(sent))


async def test_protocol_upgrades_are_refused_on_governed_routes(gateway):
    addon, _, _ = gateway
    f = reverse_flow(method="GET")
    f.request.content = b""
    f.request.headers["Upgrade"] = "websocket"
    f.request.headers["Connection"] = "Upgrade"
    await through(addon, f)
    assert f.response.status_code == 400 and f.request.host == "127.0.0.1"


async def test_a_list_answer_in_an_unreadable_form_is_withheld(gateway):
    """If the answer must be filtered and is neither JSON nor SSE, it is refused, not passed."""
    addon, _, _ = gateway
    f = await through(addon, reverse_flow())
    context.get(f).server_transforms.append(lambda message: message)  # as governance does for tools/list
    f.response = tflow.tresp(content=b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"push_files"}]}}')
    f.response.headers["Content-Type"] = "application/octet-stream"
    addon.responseheaders(f)
    assert f.response.status_code == 502
    assert b"push_files" not in b"".join(f.response.stream(b"upstream body") + f.response.stream(b""))


def test_starting_takes_the_startup_heap_out_of_full_collections(tmp_path):
    # In a process of its own: gc.freeze is process-wide and done once per process.
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    script = textwrap.dedent(f"""
        import asyncio, gc, sys
        sys.path.insert(0, "addons")
        from mitmproxy.addons.proxyserver import Proxyserver
        from mitmproxy.test import taddons
        from mcpgw.addon import MCPGateway

        async def main():
            addon = MCPGateway()
            with taddons.context(Proxyserver(), addon) as tctx:
                tctx.configure(addon, mcp_policy={str(path)!r}, keep_host_header=True)
                before = gc.get_freeze_count()
                addon.running()
                after = gc.get_freeze_count()
                addon.running()  # a second start (a script reload) freezes nothing more
                print(before, after, gc.get_freeze_count() - after)
                addon.done()
        asyncio.run(main())
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert run.returncode == 0, run.stderr
    before, after, again = map(int, run.stdout.split())
    assert before == 0 and after > 10_000 and again == 0  # mitmproxy, the gateway and its policy
