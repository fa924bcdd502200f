"""Kong's cors plugin settings (applied in guards.py)."""

from __future__ import annotations

from pydantic import Field, field_validator

from .policy.base import StrictModel


DEFAULT_CORS_METHODS = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"]


# What a browser MCP client must be able to read: the session, the negotiated version, the auth challenge.
DEFAULT_EXPOSED = ["Mcp-Session-Id", "MCP-Protocol-Version", "WWW-Authenticate"]


class CorsConfig(StrictModel):
    """Kong's cors plugin settings."""

    origins: list[str] = Field(default_factory=lambda: ["*"], description="Allowed origins; '*' allows any")
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_CORS_METHODS))
    headers: list[str] | None = Field(None, description="Allowed request headers (default: those the preflight asks for)")
    exposed_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_EXPOSED))
    credentials: bool = False
    max_age: int | None = Field(None, ge=0)
    preflight_continue: bool = False

    @field_validator("methods")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        return [m.upper() for m in v]
