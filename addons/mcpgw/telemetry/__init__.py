"""OpenTelemetry traces and metrics for governed MCP traffic, in the OTel MCP semantic conventions
(see conventions.py for the version followed). Off unless `--set mcp_otlp=URL` is given."""
