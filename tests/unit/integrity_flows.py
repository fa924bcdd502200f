"""A client request on the integrity unit tests' route `/gh`, taken through parsing and the
integrity request phase, as the pipeline would."""

from __future__ import annotations

import json

from mitmproxy.test import tflow

from mcpgw import context, inbound
from mcpgw.context import FlowContext
from mcpgw.integrity.phases import check_tools


def flow_for(snap, body):
    flow = tflow.tflow()
    flow.request.method, flow.request.path = "POST", "/gh"
    flow.request.headers.clear()
    flow.request.headers["accept"] = "application/json, text/event-stream"
    flow.request.headers["content-type"] = "application/json"
    flow.request.content = json.dumps(body).encode()
    ctx = context.attach(flow, FlowContext(snap, "gateway", snap.routes.match_gateway("/gh")))
    return ctx, flow, inbound.parse_client_messages(ctx, flow) or check_tools(ctx, flow)
