"""A span's attributes as a shared base and its own few, so that what repeats is built and encoded
once.

Of a SERVER span's twenty-odd attributes (conventions.common_attributes + gateway_attributes +
client.address) only the JSON-RPC id and the session differ from one message to the next of the
same caller, route, method and decision; of a CLIENT span's, only the id. The rest, the `base`,
is built once per distinct set of the record's facts it is made of and kept (bounded); the
OTLP encoder (otlp_encode.attributes) keeps the base's encoding by the base's identity, and
encodes only the span's own attributes each time.

The key of a base is every record fact the base's attributes are made from (KEY_FIELDS below),
so two records with the same key give equal attributes: tests/unit/test_telemetry_span_attributes.py
builds both ways over varied records and compares. A change to common_attributes,
gateway_attributes or client_attributes that reads another record field must add it here."""

from __future__ import annotations

from typing import Any

from . import conventions as conv

MAX_BASES = 4096  # distinct bases kept; when full they are dropped and built again
_BASES: dict[tuple, dict[str, Any]] = {}
SERVER_OWN = ("jsonrpc.request.id", "mcp.session.id")  # per message: never in a base
CLIENT_OWN = ("jsonrpc.request.id",)


class Attributes(dict):
    """Every attribute of a span (it is the span's attribute dict), with `base`, the shared part,
    when the encoder may use its kept encoding: the span's own attributes are then those not in
    base (`own`). Built once, complete, and not changed afterwards."""

    __slots__ = ("base", "own")

    def __init__(self, base: dict[str, Any], own: dict[str, Any]):
        super().__init__(base)
        self.update(own)
        disjoint = own.keys().isdisjoint(base)
        self.base = base if disjoint else None  # (an own value replacing a base one: encoded whole)
        self.own = own if disjoint else None


def _kept(key: tuple, build) -> dict[str, Any]:
    try:
        base = _BASES.get(key)
    except TypeError:  # an unhashable fact (never from the audit records): not kept
        return build()
    if base is None:
        if len(_BASES) >= MAX_BASES:
            _BASES.clear()
        base = _BASES[key] = build()
    return base


def _consumer_key(record: dict[str, Any]) -> tuple | None:
    consumer = record.get("consumer")
    if not consumer:
        return None
    return consumer["name"], tuple(consumer.get("groups") or ()), consumer.get("method")


def _call_key(record: dict[str, Any]) -> tuple:
    rpc = record.get("jsonrpc")
    return (rpc is not None, rpc.get("method") if rpc else None, record.get("primitive"), record.get("name"))


def server(record: dict[str, Any], protocol_version: str | None, http_version: str,
           own: dict[str, Any]) -> Attributes:
    """The SERVER span's attributes: conventions' common and gateway attributes and client.address,
    plus `own` (the caller's additions: error.type, rpc.response.status_code, an LLM call's)."""
    key = ("server", _call_key(record), protocol_version, http_version, record["mode"], record["decision"],
           record.get("route"), record.get("rule"), record.get("reason"), record.get("policy"),
           _consumer_key(record), record["http"]["status"], record.get("client"))

    def build() -> dict[str, Any]:
        attrs = conv.common_attributes(record, protocol_version, http_version)
        attrs.update(conv.gateway_attributes(record))
        if record.get("client"):
            attrs["client.address"] = record["client"]
        for name in SERVER_OWN:
            attrs.pop(name, None)
        return attrs

    mine = message_own(record)
    if record.get("session"):
        mine["mcp.session.id"] = conv.session_hash(record["session"])
    mine.update(own)
    return Attributes(_kept(key, build), mine)


def client(record: dict[str, Any], upstream: tuple[str, int], own: dict[str, Any]) -> Attributes:
    """The CLIENT span's attributes: conventions' client attributes, the upstream's address and
    HTTP status, plus `own`."""
    upstream_status = record["http"]["upstream_status"]
    key = ("client", _call_key(record), upstream, upstream_status)

    def build() -> dict[str, Any]:
        attrs = conv.client_attributes(record)
        attrs["server.address"], attrs["server.port"] = upstream
        if upstream_status is not None:
            attrs["http.response.status_code"] = upstream_status
        for name in CLIENT_OWN:
            attrs.pop(name, None)
        return attrs

    mine = message_own(record)
    mine.update(own)
    return Attributes(_kept(key, build), mine)


def message_own(record: dict[str, Any]) -> dict[str, Any]:
    """The attributes of a message that no base holds: its JSON-RPC id."""
    rpc = record.get("jsonrpc")
    if rpc is not None and rpc.get("id") is not None:
        return {"jsonrpc.request.id": conv._text(rpc["id"])}
    return {}
