"""A route's audit settings (read by audit.py and auditlog.py)."""

from __future__ import annotations

from pydantic import Field

from .policy.base import StrictModel


class AuditSettings(StrictModel):
    """A route's audit settings (Kong's ai-mcp-proxy `logging`)."""

    log_payloads: bool = Field(False, description="Add each JSON-RPC request and its response to the audit record, "
                                                  "with the policy's secrets redacted")
