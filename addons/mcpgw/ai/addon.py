"""The LLM routes' child addon: their Prometheus counters, and one audit record per MCP tool
call the provider made inside an LLM answer (the LLM call's own record comes from the audit log,
with its `llm` field), and the end of an LLM call whose flow failed (no answer from the provider).
Runs before the audit log on every flow."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mitmproxy import contentviews, http

from .. import audit, context, redaction
from ..governance import filtering
from . import answers, catalog, targets
from .relay import relay
from .request import ai_error
from .ui import LlmContentview
from .metrics import LlmCollector

if TYPE_CHECKING:
    from ..auditlog import AuditLog
    from ..metrics import Metrics

log = logging.getLogger("mcpgw.ai")


class LlmAddon:
    def __init__(self, audit_log: "AuditLog", metrics: "Metrics") -> None:
        self.audit_log = audit_log
        metrics.registry.register(LlmCollector())

    def load(self, loader) -> None:
        # the registry keys views by name: a script reload replaces the previous module's view
        contentviews.add(LlmContentview)
        if catalog.observe_list not in filtering.LIST_OBSERVERS:  # passthrough routes' catalogs
            filtering.LIST_OBSERVERS.append(catalog.observe_list)

    def response(self, flow: http.HTTPFlow):
        fctx = context.get(flow)
        if fctx is not None and fctx.ai is not None and fctx.ai.retry_job is not None:
            return self._retried(fctx, flow)  # awaited by mitmproxy before the next addon (the audit log)
        self._tool_calls(flow)
        return None

    async def _retried(self, fctx, flow: http.HTTPFlow) -> None:
        """A JSON request whose answer was held for a retry: the next targets, then the call ends."""
        try:
            await relay.retry_answer(fctx, flow)
        except Exception:  # fail closed: an error answer, never the held one with another target's data
            log.exception("LLM retry failed")
            fctx.ai.retry_job = None
            flow.response = ai_error(502, "The provider did not answer", kind="server_error")
        answers.finish(fctx, flow)
        self._tool_calls(flow)

    def done(self) -> None:  # (sync: mitmproxy calls done from sync code when a script reloads)
        relay.close()  # its listening socket, on shutdown and script reloads

    def error(self, flow: http.HTTPFlow) -> None:
        fctx = context.get(flow)
        if fctx is not None and fctx.ai is not None:
            relay.forget(fctx.ai)  # a job the flow never sent
            targets.answered(fctx.ai, None)  # no answer from the target: it counts as failed
            if not fctx.ai.published:  # the response phases never ran: the call ends here, for audit and listeners
                try:
                    answers.publish(fctx, flow, fctx.ai)
                except Exception:  # the flow already failed: nothing is forwarded, only its accounting is lost
                    log.exception("could not account for a failed LLM call")
        self._tool_calls(flow)

    def _tool_calls(self, flow: http.HTTPFlow) -> None:
        fctx = context.get(flow)
        state = fctx.ai if fctx is not None else None
        writer = self.audit_log.writer
        if state is None or not state.mcp_calls or writer is None:
            return
        calls, state.mcp_calls = state.mcp_calls, []  # once, whichever hook comes
        try:
            base = {"time": audit._iso(flow.request.timestamp_start), "flow": flow.id, "route": fctx.route_name,
                    "mode": fctx.mode, "consumer": audit.consumer_of(fctx)}
            redact = redaction.for_snapshot(fctx.snapshot)
            for call in calls:
                record = {**base, "mcp_call": {k: audit._text(v) for k, v in call.items()},
                          "primitive": "tool", "name": audit._text(call["name"]),
                          "decision": "allow" if call["decision"] == "allow" else "deny",
                          "rule": "ai.mcp.allowed_tools", "reason": None if call["decision"] == "allow" else call["decision"]}
                writer.submit(audit.PendingRecord(record, redact=redact))
        except Exception:  # after the answer: nothing is forwarded here
            log.exception("could not audit the MCP tool calls of an LLM answer")
