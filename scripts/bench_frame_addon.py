"""Benchmark reference (scripts/bench_floor.py --frame): the gateway with its pipeline emptied.

Loaded after addons/mcp_gateway.py, it leaves the gateway's hooks, child addons, flow context,
routing and canonical forms as they are and replaces the phase tuples of pipeline.py with only
what forwarding a call needs: choosing the upstream (`forwarding.forward`) and letting the
answer stream (`streaming.prepare_response`). The difference between this target and the held
floor is what the gateway costs before any phase runs; the difference between the open route and
this target is what the phases cost. It governs nothing: a measure, never a configuration."""

import sys

pipeline = sys.modules["mcpgw.pipeline"]  # the package addons/mcp_gateway.py has just imported
pipeline.HEADER_PHASES = ()
pipeline.REQUEST_PHASES = (pipeline.forwarding.forward,)
pipeline.RESPONSE_HEADER_PHASES = (pipeline.streaming.prepare_response,)
pipeline.RESPONSE_PHASES = ()

addons: list = []
