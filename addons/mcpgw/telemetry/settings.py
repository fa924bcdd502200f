"""Telemetry settings: where spans and metrics go and how many traces are kept.

Imports only policy/base.py, so the policy model and the decK translation can carry it without
depending on the telemetry package (and the OpenTelemetry SDK) itself."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from ..policy.base import StrictModel


class TelemetrySettings(StrictModel):
    """OTLP export (HTTP/protobuf) of the gateway's spans and MCP operation metrics."""

    endpoint: str = Field(..., description="OTLP/HTTP base URL (…/v1/traces and …/v1/metrics are appended) or a URL "
                                           "already ending in /v1/traces")
    service_name: str = Field("mcp-gateway", description="service.name of the gateway's resource")
    sampling: float = Field(1.0, ge=0.0, le=1.0, description="Share of new traces recorded; a client's sampled "
                                                              "flag is followed (parent-based), as OTel SDKs do")
    resource_attributes: dict[str, str] = Field(default_factory=dict, description="Extra resource attributes")

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value.rstrip("/")

    def signal_url(self, signal: str) -> str:
        """The URL for one signal ("traces", "metrics"): OTEL_EXPORTER_OTLP_ENDPOINT's rule (append
        /v1/<signal>) unless the endpoint already names a signal path."""
        base = self.endpoint
        for known in ("/v1/traces", "/v1/metrics", "/v1/logs"):
            if base.endswith(known):
                base = base[: -len(known)]
                break
        return f"{base}/v1/{signal}"
