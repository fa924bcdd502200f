"""Policy settings of session binding (`gateway.sessions`)."""

from __future__ import annotations

from pydantic import Field

from ..policy.base import StrictModel


class SessionSettings(StrictModel):
    idle_ttl: float = Field(86400, gt=0, le=30 * 86400,
                            description="Seconds a session binding lives without a request of that session; after "
                                        "that the session is unknown to the gateway (404) and the client starts a new one")
