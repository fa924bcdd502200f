"""What a message's two spans and its duration metrics share with every message of the same facts:
the span name, both statuses, both attribute bases (error.type and rpc.response.status_code
included) and the metric attributes with their series key. Built once per distinct set of facts
and kept (bounded); per message only the JSON-RPC id, the session and the times remain.

The key is every fact the plan is made from (`key` below): the record's method, kind, primitive,
name, decision, rule, reason, route, mode, policy, caller, client address, both HTTP statuses and
whether the transport failed, the protocol and HTTP versions, the answer's JSON-RPC error code
and the upstream's address. An LLM call's record (its tokens and model differ on every call) has
no plan and is built whole, as is a record with an unhashable fact.
tests/unit/test_telemetry_plans.py compares plans with attributes built from the record itself,
over varied records, whatever came before. A change to conventions.py or span_attributes.py that
reads another record field must add it to `key`."""

from __future__ import annotations

from typing import Any, Callable

from opentelemetry.trace import Status, StatusCode

from . import conventions as conv, span_attributes

UNSET = Status(StatusCode.UNSET)
MAX_PLANS = 4096  # distinct plans kept; when full they are dropped and built again
_PLANS: dict[tuple, "Plan"] = {}


class Plan:
    __slots__ = ("name", "err", "server_status", "server_base", "client_status", "client_base",
                 "metric_attributes", "metric_key", "kept")

    def __init__(self, name: str, err: str | None, server_status: Status, server_base: dict[str, Any],
                 client_status: Status, client_base: dict[str, Any], metric_attributes: dict[str, Any],
                 kept: bool):
        self.name, self.err, self.kept = name, err, kept
        self.server_status, self.server_base = server_status, server_base
        self.client_status, self.client_base = client_status, client_base
        self.metric_attributes = metric_attributes
        self.metric_key = frozenset(metric_attributes.items())


def server_extra(record: dict[str, Any], code: int | str | None, err: str | None) -> tuple[dict[str, Any], Status]:
    """The SERVER span's attributes beyond the record's own (the answer's error), and its status."""
    own: dict[str, Any] = {}
    if isinstance(code, int):
        own["rpc.response.status_code"] = str(code)
    if err:
        own["error.type"] = err
        return own, Status(StatusCode.ERROR, record.get("reason") or None)
    return own, UNSET


def client_extra(upstream_status: int | None, failed: bool, code: int | str | None) -> tuple[dict[str, Any], Status]:
    """The CLIENT span's: the upstream's failure, its HTTP error or its JSON-RPC error (or tool_error)."""
    own: dict[str, Any] = {}
    err = "upstream_error" if failed else \
        (str(upstream_status) if upstream_status is not None and upstream_status >= 400 else None)
    if err is None and code is not None and upstream_status is not None:
        err = str(code)
        if isinstance(code, int):
            own["rpc.response.status_code"] = err
    if err:
        own["error.type"] = err
        return own, Status(StatusCode.ERROR)
    return own, UNSET


def key(record: dict[str, Any], version: str | None, http_version: str, code: int | str | None, failed: bool,
        upstream: tuple[str, int]) -> tuple | None:
    if record.get("llm") is not None:
        return None
    rpc = record.get("jsonrpc")
    http = record["http"]
    consumer = record.get("consumer")
    return (rpc is not None, rpc.get("kind") if rpc else None, rpc.get("method") if rpc else None,
            record.get("primitive"), record.get("name"), http["method"], http["status"], http["upstream_status"],
            record.get("error") is not None, record["mode"], record["decision"], record.get("route"),
            record.get("rule"), record.get("reason"), record.get("policy"), record.get("client"),
            (consumer["name"], tuple(consumer.get("groups") or ()), consumer.get("method")) if consumer else None,
            version, http_version, code, failed, upstream)


def plan(record: dict[str, Any], version: str | None, http_version: str, code: int | str | None, failed: bool,
         upstream: tuple[str, int], tool: Callable[[dict[str, Any]], str | None]) -> Plan:
    """The record's plan: kept, or built now (and kept when its facts make a key)."""
    k = key(record, version, http_version, code, failed, upstream)
    try:
        found = _PLANS.get(k) if k is not None else None
    except TypeError:  # an unhashable fact (never from the audit records)
        k = None
        found = None
    if found is None:
        found = build(record, version, http_version, code, failed, upstream, tool, kept=k is not None)
        if k is not None:
            if len(_PLANS) >= MAX_PLANS:
                _PLANS.clear()
            _PLANS[k] = found
    return found


def build(record: dict[str, Any], version: str | None, http_version: str, code: int | str | None, failed: bool,
          upstream: tuple[str, int], tool: Callable[[dict[str, Any]], str | None], kept: bool = False) -> Plan:
    err = conv.error_type(record, code)
    own, server_status = server_extra(record, code, err)
    c_own, client_status = client_extra(record["http"]["upstream_status"], failed, code)
    llm = conv.llm_span(record)  # an LLM call: the GenAI inference span's name and attributes
    if llm is not None:
        own.update(llm[1])
        c_own.update(llm[1])
    server = span_attributes.server(record, version, http_version, own)
    client = span_attributes.client(record, upstream, c_own)
    return Plan(llm[0] if llm is not None else conv.span_name(record), err,
                server_status, _shared(server, span_attributes.SERVER_OWN),
                client_status, _shared(client, span_attributes.CLIENT_OWN),
                conv.metric_attributes(record, err, tool(record), version), kept)


def attributes(plan: Plan, base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A span's attributes: a kept plan's base (its encoding kept too) and the message's own."""
    return span_attributes.Attributes(base, own) if plan.kept else {**base, **own}


def _shared(attrs: dict[str, Any], per_message: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in per_message}


def server_own(record: dict[str, Any]) -> dict[str, Any]:
    """A SERVER span's per-message attributes: the JSON-RPC id and the session."""
    own = span_attributes.message_own(record)
    if record.get("session"):
        own["mcp.session.id"] = conv.session_hash(record["session"])
    return own
