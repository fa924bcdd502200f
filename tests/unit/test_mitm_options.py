"""mitmproxy options (mitm_options.py): required ones in force from load, mistyped ones refused."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.options import Options
from mitmproxy.test import taddons

from mcpgw import mitm_options
from mcpgw.addon import MCPGateway

POLICY = """
services:
  gh: {url: "https://api.githubcopilot.com/mcp"}
routes:
  github-mcp: {service: gh, paths: [/github-mcp]}
"""


def options_with(*deferred: str) -> Options:
    opts = Options()
    for name in ("mcp_policy", "mcp_policy_poll", "mcp_policy_settle", "mcp_public_hosts"):
        opts.add_option(name, str, "", "")
    opts.set(*(f"{name}=x" for name in deferred), defer=True)
    return opts


@pytest.mark.parametrize("name, meant", [("mcp_polciy", "mcp_policy"), ("MCP-POLICY", "mcp_policy"),
                                         ("mpc_policy", "mcp_policy"), ("mcp_policy_setle", "mcp_policy_settle"),
                                         ("mcppolicy", "mcp_policy")])
def test_misspellings_name_the_closest_gateway_option(name, meant):
    found = mitm_options.mistyped(options_with(name))
    assert found == (name, f"unknown option {name!r}: did you mean {meant}?")


def test_an_unknown_name_in_the_gateways_namespace_lists_its_options():
    name, message = mitm_options.mistyped(options_with("mcp_audit_rotate"))
    assert name == "mcp_audit_rotate" and "mcp_policy, mcp_policy_poll" in message


def test_other_addons_options_are_left_alone():
    assert mitm_options.mistyped(options_with("my_addon_flag", "upstream_cert_store", "policy")) is None


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def test_required_options_are_in_force_as_soon_as_the_gateway_loads(policy):
    addon = MCPGateway()
    with taddons.context(Proxyserver()) as tctx:
        tctx.options.connection_strategy = "eager"  # mitmproxy's default, or an operator's --set
        tctx.master.addons.add(addon)  # load: before mitmproxy opens a listener
        assert tctx.options.connection_strategy == "lazy" and tctx.options.keep_host_header is True
        assert not addon._running
        with pytest.raises(exceptions.OptionsError, match="requires connection_strategy='lazy'"):
            tctx.options.connection_strategy = "eager"  # refused before `running` too
        assert tctx.options.connection_strategy == "lazy"


def test_a_mistyped_option_at_start_up_loads_nothing_and_stops_the_gateway(policy):
    addon = MCPGateway()
    with taddons.context(Proxyserver(), addon) as tctx:
        tctx.options.deferred["mcp_polciy"] = str(policy)
        tctx.configure(addon, mcp_policy="")
        assert addon.store.current is None  # not even the default policy: requests get 503
        with pytest.raises(SystemExit):
            addon.running()


def test_a_mistyped_option_later_is_refused_once(policy):
    addon = MCPGateway()
    with taddons.context(Proxyserver(), addon) as tctx:
        tctx.configure(addon, mcp_policy=str(policy))
        addon._running = True
        tctx.options.deferred["mcp_polciy"] = "other.yaml"  # what mitmproxy's options.load leaves behind
        with pytest.raises(exceptions.OptionsError, match="did you mean mcp_policy"):
            tctx.configure(addon, mcp_public_hosts="gw.example")
        assert "mcp_polciy" not in tctx.options.deferred
        tctx.configure(addon, mcp_public_hosts="gw.example")  # reported once, not forever
        assert addon.store.current.source == str(policy.resolve())
