"""The rate limits' child addon: charges an LLM call's tokens once its answer has ended.

Its hooks run after the gateway addon's own (child addons come after their parent on every
event), so on `response` the LLM response phases have read the usage of a JSON answer, and on
`error` (the provider unreachable, the client gone mid-stream) whatever usage a stream carried
before it broke is charged too. Charging only schedules the counter updates."""

from __future__ import annotations

import logging

from mitmproxy import http

from .. import context
from . import tokens

log = logging.getLogger("mcpgw.limits")


class LimitsAddon:
    def response(self, flow: http.HTTPFlow) -> None:
        self._charge(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._charge(flow)

    @staticmethod
    def _charge(flow: http.HTTPFlow) -> None:
        fctx = context.get(flow)
        if fctx is not None and fctx.token_charges:
            try:
                tokens.charge(fctx)
            except Exception:  # the answer is already delivered: only this call's accounting is lost
                log.exception("token limits: could not charge an LLM call")
