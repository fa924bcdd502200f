"""Span names, attributes and metric attributes of the OpenTelemetry MCP semantic conventions,
built from the gateway's audit records (the same decisions the audit log and Prometheus see).

Followed: open-telemetry/semantic-conventions-genai v0.1.0, docs/gen-ai/mcp.md (status
Development; the MCP conventions moved there from semantic-conventions 1.39-1.45). Spans are
named `{mcp.method.name} {target}` (target: gen_ai.tool.name or gen_ai.prompt.name), SERVER for
the client's message as the gateway receives it, CLIENT for the gateway's call to the upstream.
The gateway's own facts ride under `mcpgw.*`.

What is not the convention's plain meaning, on purpose:
- `mcp.session.id` holds the first 16 hex digits of the SHA-256 of the session id: the raw id is a
  bearer value for the session, and traces go to another system.
- a span's target is the tool/prompt name only when the call was allowed: a denied name is the
  client's free text and would make span names (and metric series) unbounded."""

from __future__ import annotations

import hashlib
from typing import Any

from ..protocol.jsonrpc import KNOWN_METHODS

SEMCONV = "semantic-conventions-genai v0.1.0 (gen-ai/mcp.md)"
MAX_ATTR = 256  # longest client-supplied string kept in an attribute
OTHER = "_OTHER"  # the conventions' value for a method outside the known set
# The conventions' advice for mcp.*.operation.duration (seconds).
DURATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_ATTR else text[:MAX_ATTR] + "..."


_hashed: dict[str, str] = {}  # session id -> its hash: each message of a session asks again
MAX_HASHED = 4096


def session_hash(session: str) -> str:
    digest = _hashed.get(session)
    if digest is None:
        if len(_hashed) >= MAX_HASHED:  # ids are the client's: any number of them, kept bounded
            _hashed.clear()
        digest = _hashed[session] = hashlib.sha256(session.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return digest


def method_of(record: dict[str, Any]) -> str | None:
    rpc = record.get("jsonrpc")
    return rpc.get("method") if rpc else None


def target_of(record: dict[str, Any]) -> str | None:
    if record.get("decision") != "allow" or record.get("primitive") not in ("tool", "prompt"):
        return None
    name = record.get("name")
    return _text(name) if isinstance(name, str) else None


def span_name(record: dict[str, Any]) -> str:
    method = method_of(record)
    if method is None:
        rpc = record.get("jsonrpc")
        # the client's answer to a server request ("response"/"error"), or a request carrying no
        # message (GET stream, DELETE, refused before the body): named like an HTTP span
        return rpc["kind"] if rpc else record["http"]["method"]
    method = method if method in KNOWN_METHODS else OTHER
    target = target_of(record)
    return f"{method} {target}" if target else method


def error_type(record: dict[str, Any], rpc_code: int | str | None) -> str | None:
    """error.type: the JSON-RPC error code of the answer (the gateway's or the upstream's), or
    `tool_error` for a tools/call result with isError (answers.py), else the HTTP status of a
    failed answer, else the transport failure; None when the message succeeded."""
    if rpc_code is not None:
        return str(rpc_code)
    status = record["http"]["status"]
    if record.get("error") is not None and status is None:
        return "upstream_error"
    if record.get("decision") == "deny" or (status is not None and status >= 400):
        return str(status) if status is not None else OTHER
    return None


def common_attributes(record: dict[str, Any], protocol_version: str | None, http_version: str) -> dict[str, Any]:
    """Attributes both spans of a message carry."""
    attrs: dict[str, Any] = {"network.transport": "tcp", "network.protocol.name": "http"}
    if http_version:
        attrs["network.protocol.version"] = http_version
    rpc = record.get("jsonrpc")
    if rpc is not None:
        attrs["jsonrpc.protocol.version"] = "2.0"
        if rpc.get("method") is not None:
            attrs["mcp.method.name"] = _text(rpc["method"])
        if rpc.get("id") is not None:
            attrs["jsonrpc.request.id"] = _text(rpc["id"])
    if protocol_version:
        attrs["mcp.protocol.version"] = _text(protocol_version)
    if record.get("session"):
        attrs["mcp.session.id"] = session_hash(record["session"])
    name, primitive = record.get("name"), record.get("primitive")
    if isinstance(name, str):
        if primitive == "tool":
            attrs["gen_ai.tool.name"] = _text(name)
            attrs["gen_ai.operation.name"] = "execute_tool"
        elif primitive == "prompt":
            attrs["gen_ai.prompt.name"] = _text(name)
        elif primitive == "resource":
            attrs["mcp.resource.uri"] = _text(name)
    return attrs


def client_attributes(record: dict[str, Any]) -> dict[str, Any]:
    """The CLIENT span's own: what names the call; the rest (session, protocol versions, the
    gateway's decision) is on its parent SERVER span, one hop up in any trace view."""
    attrs: dict[str, Any] = {"network.transport": "tcp"}
    rpc = record.get("jsonrpc")
    if rpc is not None:
        if rpc.get("method") is not None:
            attrs["mcp.method.name"] = _text(rpc["method"])
        if rpc.get("id") is not None:
            attrs["jsonrpc.request.id"] = _text(rpc["id"])
    name, primitive = record.get("name"), record.get("primitive")
    if isinstance(name, str) and primitive == "tool":
        attrs["gen_ai.tool.name"] = _text(name)
        attrs["gen_ai.operation.name"] = "execute_tool"
    elif isinstance(name, str) and primitive == "prompt":
        attrs["gen_ai.prompt.name"] = _text(name)
    elif isinstance(name, str) and primitive == "resource":
        attrs["mcp.resource.uri"] = _text(name)
    return attrs


def gateway_attributes(record: dict[str, Any]) -> dict[str, Any]:
    """mcpgw.*: what the gateway decided and for whom."""
    attrs: dict[str, Any] = {"mcpgw.mode": record["mode"], "mcpgw.decision": record["decision"],
                             "mcpgw.shadow": record["decision"] == "would_deny"}
    for key, value in (("mcpgw.route", record.get("route")), ("mcpgw.rule", record.get("rule")),
                       ("mcpgw.reason", record.get("reason")), ("mcpgw.policy", record.get("policy"))):
        if value:
            attrs[key] = _text(value)
    consumer = record.get("consumer")
    if consumer:
        attrs["mcpgw.consumer"] = _text(consumer["name"])
        attrs["mcpgw.consumer.groups"] = [_text(g) for g in consumer.get("groups") or ()]
        attrs["mcpgw.auth.method"] = consumer.get("method") or ""
    if record["http"]["status"] is not None:
        attrs["http.response.status_code"] = record["http"]["status"]
    return attrs


def metric_attributes(record: dict[str, Any], err: str | None, tool: str | None,
                      protocol_version: str | None) -> dict[str, Any]:
    """Bounded attributes for mcp.*.operation.duration: known methods, a bounded tool set."""
    method = method_of(record)
    attrs: dict[str, Any] = {"mcp.method.name": (method if method in KNOWN_METHODS else OTHER) if method else
                             (record["jsonrpc"]["kind"] if record.get("jsonrpc") else "none"),
                             "network.transport": "tcp", "mcpgw.decision": record["decision"]}
    if record.get("route"):
        attrs["mcpgw.route"] = record["route"]
    if tool:
        attrs["gen_ai.tool.name"] = tool
    if err:
        attrs["error.type"] = err
    if protocol_version in KNOWN_REVISIONS:
        attrs["mcp.protocol.version"] = protocol_version
    return attrs


KNOWN_REVISIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"})


def llm_span(record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """An LLM route's call (the audit record's `llm` field, from ai/): the GenAI conventions'
    inference span name `{gen_ai.operation.name} {gen_ai.request.model}` and attributes."""
    llm = record.get("llm")
    if not isinstance(llm, dict):
        return None
    requested = llm.get("requested_model") or llm.get("model")
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat"}  # Chat Completions and Responses alike
    for key, value in (("gen_ai.provider.name", llm.get("provider")), ("gen_ai.request.model", requested),
                       ("gen_ai.response.model", llm.get("model")),
                       ("gen_ai.usage.input_tokens", llm.get("prompt_tokens")),
                       ("gen_ai.usage.output_tokens", llm.get("completion_tokens")),
                       ("mcpgw.llm.cost", llm.get("cost")), ("mcpgw.llm.stream", llm.get("stream")),
                       ("mcpgw.llm.time_to_first_token_ms", llm.get("time_to_first_token_ms"))):
        if value is not None:
            attrs[key] = _text(value) if isinstance(value, str) else value
    return (f"chat {_text(requested)}" if requested else "chat"), attrs
