"""MCP security gateway for mitmproxy.

    mitmdump -s addons/mcp_gateway.py --set mcp_policy=policies/gateway.yaml \
        --mode reverse:http://127.0.0.1:9@8443

The code lives in the `mcpgw` package beside this file. If it cannot be imported, this script
installs a stand-in that refuses every request: mitmproxy would otherwise keep proxying with no
addon at all, and a gateway must fail closed.
"""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
# mitmproxy re-imports this script when it changes, but not the package: drop it so edits apply.
for _name in [m for m in sys.modules if m == "mcpgw" or m.startswith("mcpgw.")]:
    del sys.modules[_name]

try:
    from mcpgw.addon import MCPGateway

    addons = [MCPGateway()]
except Exception as _exc:  # noqa: BLE001 - any import failure must end in refusing traffic
    import logging

    from mitmproxy import http

    _reason = f"{type(_exc).__name__}: {_exc}"
    logging.getLogger("mcpgw").error("MCP gateway failed to load (%s); refusing all traffic", _reason)

    class GatewayUnavailable:
        """Refuses every flow while the gateway code cannot be loaded."""

        def requestheaders(self, flow: http.HTTPFlow) -> None:
            flow.response = http.Response.make(
                503, b'{"message":"MCP gateway unavailable: its code failed to load; see the gateway log"}',
                {"Content-Type": "application/json"})

    addons = [GatewayUnavailable()]
