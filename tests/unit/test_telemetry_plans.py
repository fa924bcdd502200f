"""Kept span plans (telemetry/plans.py) give each message exactly the names, statuses, attributes
and metric attributes built from its own record, whatever came before: written out here the way
the conventions describe them, and compared over varied records, answers and upstreams."""

from __future__ import annotations

import itertools
import random

from opentelemetry.trace import StatusCode

from mcpgw.telemetry import conventions as conv, plans, span_attributes

from .test_telemetry_span_attributes import CHOICES, fresh_client, fresh_server, records, variants

CODES = [None, -32602, -32601, 502, "tool_error", "_OTHER"]
UPSTREAMS = [("127.0.0.1", 4000), ("127.0.0.1", 4001), ("mcp.example", 443)]
LLM = {"provider": "openai", "requested_model": "gpt-x", "model": "gpt-x-1", "prompt_tokens": 12,
       "completion_tokens": 30, "stream": True}


def client_error(upstream_status, failed, code):
    """The CLIENT span's error.type, in the order the conventions page lists them."""
    if failed:
        return "upstream_error"
    if upstream_status is None:
        return None  # nothing was answered by the upstream
    if upstream_status >= 400:
        return str(upstream_status)
    return None if code is None else str(code)


def expected(record, version, http_version, code, failed, upstream):
    """(name, server attributes, server status, client attributes, client status, metric attributes)."""
    err = conv.error_type(record, code)
    s_own, s_status = {}, (StatusCode.UNSET, None)
    if isinstance(code, int):
        s_own["rpc.response.status_code"] = str(code)
    if err:
        s_own["error.type"] = err
        s_status = (StatusCode.ERROR, record.get("reason") or None)
    upstream_status = record["http"]["upstream_status"]
    c_err = client_error(upstream_status, failed, code)
    c_own = {"error.type": c_err} if c_err else {}
    if not failed and upstream_status is not None and upstream_status < 400 and isinstance(code, int):
        c_own["rpc.response.status_code"] = c_err  # the upstream's JSON-RPC error (not an HTTP one)
    c_status = (StatusCode.ERROR, None) if c_err else (StatusCode.UNSET, None)
    llm = conv.llm_span(record)
    if llm:
        s_own.update(llm[1])
        c_own.update(llm[1])
    tool = conv.target_of(record) if record.get("primitive") == "tool" else None
    return (llm[0] if llm else conv.span_name(record),
            fresh_server(record, version, http_version, s_own), s_status,
            fresh_client(record, upstream, c_own), c_status,
            conv.metric_attributes(record, err, tool, version))


def planned(record, version, http_version, code, failed, upstream):
    plan = plans.plan(record, version, http_version, code, failed, upstream,
                      lambda r: conv.target_of(r) if r.get("primitive") == "tool" else None)
    server = plans.attributes(plan, plan.server_base, plans.server_own(record))
    client = plans.attributes(plan, plan.client_base, span_attributes.message_own(record))
    assert plan.metric_key == frozenset(plan.metric_attributes.items())
    return (plan.name, dict(server), (plan.server_status.status_code, plan.server_status.description),
            dict(client), (plan.client_status.status_code, plan.client_status.description), plan.metric_attributes)


def test_kept_plans_give_each_message_its_own_record_s_spans():
    plans._PLANS.clear()
    rng = random.Random(7)
    cases = []
    for record in records(200, 11):
        if rng.random() < 0.1:
            record["llm"] = dict(LLM, prompt_tokens=rng.randint(1, 99))
        if rng.random() < 0.2:
            record["error"] = "connection refused"
        record["http"]["method"] = rng.choice(["POST", "GET", "DELETE"])
        cases.append((record, rng.choice(["2025-06-18", None]), rng.choice(["1.1", "2"]), rng.choice(CODES),
                      rng.random() < 0.2, rng.choice(UPSTREAMS)))
    for n, (record, *facts) in enumerate(cases * 5):  # the same facts again: from kept plans
        record = {**record, "jsonrpc": record["jsonrpc"] and {**record["jsonrpc"], "id": n},
                  "session": rng.choice(["s1", "s2", None])}
        assert planned(record, *facts) == expected(record, *facts)
    assert 0 < len(plans._PLANS) < len(cases)  # plans were reused, and an LLM call's never kept
    assert not any(k is None for k in plans._PLANS)


def test_a_record_differing_in_one_fact_gets_its_own_plan():
    plans._PLANS.clear()
    for record in records(30, 5):
        facts = ("2025-06-18", "1.1", None, False, UPSTREAMS[0])
        planned(record, *facts)  # kept first
        others = [(other, *facts) for other in variants(record)]
        others += [({**record, "error": "connection refused"}, *facts),
                   ({**record, "http": {**record["http"], "method": "DELETE"}}, *facts),
                   ({**record, "jsonrpc": {"kind": "response", "id": 3}}, *facts),  # the client's answers
                   ({**record, "jsonrpc": {"kind": "error", "id": 3}}, *facts)]
        others += [(record, v, h, c, f, u) for v, h, c, f, u in itertools.product(
            ["2025-06-18", None], ["1.1", "2"], CODES, [False, True], UPSTREAMS)]
        for case in others:
            assert planned(*case) == expected(*case)


def test_per_message_facts_never_land_in_a_plan():
    plans._PLANS.clear()
    a = next(records(1, 3))
    a["jsonrpc"] = {"kind": "request", "method": "tools/call", "id": 1}
    b = {**a, "jsonrpc": {**a["jsonrpc"], "id": 2}, "session": "other"}
    facts = (None, "1.1", None, False, UPSTREAMS[0])
    first, second = planned(a, *facts), planned(b, *facts)
    assert len(plans._PLANS) == 1  # one plan for both
    assert first[1]["jsonrpc.request.id"] == "1" and second[1]["jsonrpc.request.id"] == "2"
    assert second[1]["mcp.session.id"] == conv.session_hash("other")
    assert first[3]["jsonrpc.request.id"] == "1" and second[3]["jsonrpc.request.id"] == "2"
    plan = next(iter(plans._PLANS.values()))
    assert not set(span_attributes.SERVER_OWN) & plan.server_base.keys()
    assert not set(span_attributes.CLIENT_OWN) & plan.client_base.keys()


def test_an_unhashable_fact_is_built_whole():
    plans._PLANS.clear()
    record = next(records(1, 4))
    record["name"] = ["not", "hashable"]
    facts = ("2025-06-18", "1.1", None, False, UPSTREAMS[0])
    assert planned(record, *facts) == expected(record, *facts)
    assert not plans._PLANS

