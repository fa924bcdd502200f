"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
import yaml
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from mcpgw.addon import MCPGateway


@pytest.fixture
def gateway_with(tmp_path):
    """start(policy) -> the gateway addon configured with that policy (YAML text or a dict), in a
    mitmproxy test context with the proxy server addon; each started one is closed at the end."""
    contexts = []

    def start(policy: str | dict) -> MCPGateway:
        path = tmp_path / f"policy{len(contexts)}.yaml"
        path.write_text(policy if isinstance(policy, str) else yaml.safe_dump(policy))
        addon = MCPGateway()
        ctx = taddons.context(Proxyserver(), addon)
        tctx = ctx.__enter__()
        contexts.append(ctx)
        tctx.configure(addon, mcp_policy=str(path), keep_host_header=True)
        return addon

    yield start
    for ctx in contexts:
        ctx.__exit__(None, None, None)
