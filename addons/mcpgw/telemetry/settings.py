"""Telemetry settings: where spans and metrics go and how many traces are kept.

Imports only policy/base.py and policy/secrets.py, so the policy model and the decK translation can carry it without
depending on the telemetry package (and the OpenTelemetry SDK) itself."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..policy.base import StrictModel, http_url
from ..policy.secrets import SecretTextValue


class TelemetrySettings(StrictModel):
    """OTLP export (HTTP/protobuf) of the gateway's spans and MCP operation metrics."""

    endpoint: str = Field(..., description="OTLP/HTTP base URL (…/v1/traces and …/v1/metrics are appended) or a URL "
                                           "already ending in /v1/traces")
    service_name: str = Field("mcp-gateway", description="service.name of the gateway's resource")
    sampling: float = Field(1.0, ge=0.0, le=1.0, description="Share of new traces recorded; a client's sampled "
                                                              "flag is followed (parent-based), as OTel SDKs do")
    resource_attributes: dict[str, str] = Field(default_factory=dict, description="Extra resource attributes")
    protocol: Literal["http/protobuf", "grpc"] = Field("http/protobuf", description="OTLP transport: HTTP with "
                                                       "protobuf bodies, or gRPC (endpoint http(s)://host:4317)")

    @field_validator("protocol")
    @classmethod
    def _grpc_installed(cls, value: str) -> str:
        import importlib.util

        if value == "grpc" and importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
            raise ValueError("OTLP/gRPC needs the otlp-grpc extra (opentelemetry-exporter-otlp-proto-grpc, grpcio)")
        return value

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        http_url(value, "the endpoint")
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


class FileLog(StrictModel):
    """Kong's file-log: one JSON object per request, appended to a file."""

    path: str = Field(..., min_length=1, description="File to append Kong-shaped log records to ('-': standard output)")


class HttpLog(StrictModel):
    """Kong's http-log: Kong-shaped log records POSTed to an HTTP endpoint, in batches."""

    endpoint: str = Field(..., description="http(s) URL the records are sent to")
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    content_type: Literal["application/json", "application/json; charset=utf-8"] = "application/json"
    headers: dict[str, SecretTextValue] = Field(default_factory=dict, description="Headers sent with each batch; "
                                                "secret references such as 'Bearer {env://LOG_TOKEN}' are resolved at load")

    def key(self) -> tuple:
        """What makes two http-logs the same sink (the serialized form hides header values)."""
        return (self.model_dump_json(exclude={"headers"}), tuple(sorted((k, v.reveal()) for k, v in self.headers.items())))
    timeout: float = Field(10.0, gt=0, le=300, description="Seconds for one send")
    max_batch_size: int = Field(1, ge=1, le=1000, description="Records per request (one: a JSON object; more: an array)")
    max_coalescing_delay: float = Field(1.0, ge=0, le=3600, description="Seconds a partial batch waits for more records")
    max_entries: int = Field(10000, ge=1, le=1_000_000, description="Records queued before new ones are dropped (counted)")

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        http_url(value, "the endpoint")
        return value


class RouteTelemetry(StrictModel):
    """What a route's traffic is reported to, beside the audit log (Kong's logging plugins)."""

    file_log: FileLog | None = None
    http_log: HttpLog | None = None
    prometheus: bool = Field(False, description="Kong's prometheus plugin: counted in the native metrics "
                                                "(served with --set mcp_metrics)")
    opentelemetry: TelemetrySettings | None = Field(None, description="Spans and metrics of this route over OTLP, "
                                                                      "unless --set mcp_otlp exports all routes")
