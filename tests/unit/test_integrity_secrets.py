"""Secret scanning of tool traffic: the detectors, redaction that keeps the structure, the
gateway's own secrets always redacted, arguments blocked / redacted / audited on real flows, and
results redacted or refused, in JSON and in an SSE stream split inside the token."""

from __future__ import annotations

import json

import pytest

from mcpgw.integrity.leaks import BUILTIN, LeakScanner
from mcpgw.integrity.settings import SecretSettings
from mcpgw.policy.models import Policy
from mcpgw.policy.store import Snapshot
from mcpgw.protocol.messages import SSEStream, message_event_transform, transform_json_body
from mcpgw.routing import RouteTable

from .integrity_flows import flow_for

GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"  # 36 after the prefix, as GitHub issues them
AWS = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS's documented example key id
SAMPLES = {
    "github_token": [GHP, "gho_" + "x" * 36, "ghs_" + "Z9" * 18, "github_pat_" + "11ABCDEFG0" + "a" * 72],
    "aws_access_key": [AWS, "ASIA" + "Y" * 16],
    "slack_token": ["xoxb-" + "1234567890-0987654321-abcdefABCDEF"],
    "slack_webhook": ["https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"],
    "openai_key": ["sk-proj-" + "abcDEF123_-" * 4, "sk-" + "a" * 48],
    "private_key": ["-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
                    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA (truncated"],
    "jwt": ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"],
    "google_api_key": ["AIza" + "SyA" + "b" * 32],
    "stripe_key": ["sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"],
}
BENIGN = ["task-1234567890abcdefghij1234", "ghp_short", "AKIA", "sha 3f786850e387550fdab836ed7e6dc881de23001b",
          "550e8400-e29b-41d4-a716-446655440000", "eyJ only", "the BEGIN of a PUBLIC KEY block", "risk-assessment-of-keys"]


def scanner(known=(), **settings) -> LeakScanner:
    return LeakScanner(SecretSettings.model_validate(settings), tuple(known))


@pytest.mark.parametrize("detector, sample", [(d, s) for d, ss in SAMPLES.items() for s in ss])
def test_each_detector_finds_and_redacts_its_format(detector, sample):
    text = f"before {sample} after"
    new, hits, changed = scanner().scan(text, redact=True)
    assert hits.detectors == {detector} and changed
    assert sample not in new and f"[redacted:{detector}]" in new and new.startswith("before ")


@pytest.mark.parametrize("text", BENIGN)
def test_benign_strings_are_left_alone(text):
    new, hits, changed = scanner().scan(text, redact=True)
    assert (new, hits.detectors, changed) == (text, set(), False)


def test_structure_is_kept_and_paths_named():
    result = {"content": [{"type": "text", "text": f"token: {GHP}"}, {"type": "text", "text": "fine"}],
              "structuredContent": {"env": {"GITHUB_TOKEN": GHP, "other": 1}}, "isError": False}
    new, hits, _ = scanner().scan(result, redact=True, path="result")
    assert new == {"content": [{"type": "text", "text": "token: [redacted:github_token]"}, {"type": "text", "text": "fine"}],
                   "structuredContent": {"env": {"GITHUB_TOKEN": "[redacted:github_token]", "other": 1}}, "isError": False}
    assert list(new) == list(result) and new["content"][1] is result["content"][1]  # untouched parts shared
    assert hits.paths == ["result.content[0].text", "result.structuredContent.env.GITHUB_TOKEN"]


def test_gateway_secrets_are_redacted_even_when_only_auditing():
    new, hits, changed = scanner(known=("upstream-secret-123",)).scan("echo: Bearer upstream-secret-123", redact=False)
    assert new == "echo: Bearer [redacted]" and hits.detectors == {"gateway_secret"} and changed


def test_user_rules_and_detector_choice():
    s = scanner(detectors=["aws_access_key"], rules=[{"name": "acme_key", "regex": r"acme_[0-9a-f]{16}"}])
    _, hits, _ = s.scan(f"{GHP} acme_0123456789abcdef {AWS}", redact=False)
    assert hits.detectors == {"aws_access_key", "acme_key"}  # github_token not chosen
    with pytest.raises(ValueError):
        SecretSettings.model_validate({"detectors": ["nope"]})
    with pytest.raises(ValueError):
        SecretSettings.model_validate({"rules": [{"name": "x", "regex": "a*"}]})  # matches everything


def test_builtin_names_match_the_settings():
    assert set(SAMPLES) == set(BUILTIN)


# --- on flows -----------------------------------------------------------------------------------

def snapshot(secrets: dict, tmp_path, credentials: dict | None = None) -> Snapshot:
    route = {"service": "gh", "paths": ["/gh"], "integrity": {"secrets": secrets}}
    if credentials:
        route.update(credentials=credentials)
    policy = Policy.model_validate({"services": {"gh": {"url": "http://127.0.0.1:1/mcp"}}, "routes": {"gh": route}})
    return Snapshot(policy, RouteTable(policy), "digest", 1, str(tmp_path / "policy.yaml"), ())


def call(**arguments):
    return {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "create_issue", "arguments": arguments}}


def test_arguments_with_an_aws_key_are_blocked(tmp_path):
    ctx, flow, answer = flow_for(snapshot({}, tmp_path), call(body=f"my key is {AWS}", title="x"))
    error = json.loads(answer.content)["error"]
    assert error["code"] == -32602 and "aws_access_key in params.arguments.body" in error["message"]
    assert AWS not in answer.content.decode() and AWS not in json.dumps(ctx.audit_fields.get("findings", []))
    assert [(d.allowed, d.rule) for d in ctx.decisions] == [(False, "integrity.secrets")]
    assert flow.marked == ":no_entry:"


def test_arguments_redacted_or_audited(tmp_path):
    ctx, flow, answer = flow_for(snapshot({"arguments": "redact"}, tmp_path), call(body=f"key {AWS}"))
    assert answer is None
    sent = json.loads(flow.request.content)
    assert sent["params"]["arguments"]["body"] == "key [redacted:aws_access_key]" and sent["id"] == 3
    ctx, flow, answer = flow_for(snapshot({"arguments": "audit"}, tmp_path), call(body=f"key {AWS}"))
    assert answer is None and AWS in flow.request.content.decode() and ctx.audit_fields.get("findings", [])[0]["action"] == "audited"
    ctx, flow, answer = flow_for(snapshot({"mode": "shadow"}, tmp_path), call(body=f"key {AWS}"))
    assert answer is None and ctx.audit_fields.get("findings", [])[0]["action"] == "would_block"


def answer(ctx, result) -> dict:
    body = json.dumps({"jsonrpc": "2.0", "id": 3, "result": result}).encode()
    new = transform_json_body(body, ctx.server_transforms)
    return json.loads(new if new is not None else body)


def test_results_are_redacted_or_refused(tmp_path):
    ctx, _, _ = flow_for(snapshot({}, tmp_path), call())
    out = answer(ctx, {"content": [{"type": "text", "text": f"found {GHP}"}]})
    assert out["result"]["content"][0]["text"] == "found [redacted:github_token]"
    assert ctx.audit_fields.get("findings", []) == [{"check": "integrity.secrets", "direction": "result", "detectors": ["github_token"],
                             "where": ["result.content[0].text"], "action": "redacted"}]
    ctx, _, _ = flow_for(snapshot({"results": "block"}, tmp_path), call())
    out = answer(ctx, {"content": [{"type": "text", "text": f"found {GHP}"}]})
    assert out["id"] == 3 and "withheld this answer" in out["error"]["message"] and GHP not in json.dumps(out)


def test_an_echoed_injected_credential_never_reaches_the_client(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSTREAM_TOKEN", "upstream-secret-value-42")
    from mcpgw.policy.secrets import SecretResolver

    creds = {"mode": "inject", "allow_anonymous": True, "add": {"headers": ["Authorization:Bearer {env://UPSTREAM_TOKEN}"]}}
    policy = Policy.model_validate({"services": {"gh": {"url": "http://127.0.0.1:1/mcp"}}, "routes": {"gh": {
        "service": "gh", "paths": ["/gh"], "credentials": creds, "integrity": {"secrets": {"results": "audit"}}}}},
        context={"secrets": SecretResolver()})
    snap = Snapshot(policy, RouteTable(policy), "digest", 1, str(tmp_path / "policy.yaml"), ())
    ctx, _, _ = flow_for(snap, call())
    out = answer(ctx, {"content": [{"type": "text", "text": "your header was: Bearer upstream-secret-value-42"}]})
    assert out["result"]["content"][0]["text"] == "your header was: Bearer [redacted]"


def test_sse_stream_split_inside_the_token(tmp_path):
    ctx, _, _ = flow_for(snapshot({}, tmp_path), call())
    event = b"event: message\ndata: " + json.dumps(
        {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": f"t={GHP}"}]}}).encode() + b"\n\n"
    cut = event.index(GHP.encode()) + 10  # inside the token
    stream = SSEStream([message_event_transform(ctx.server_transforms)])
    first = b"".join(stream(event[:cut]))
    assert first == b""  # nothing of the incomplete event is relayed
    out = b"".join(stream(event[cut:])) + b"".join(stream(b""))
    assert GHP.encode() not in out and b"[redacted:github_token]" in out


def test_a_client_answer_to_an_elicitation_is_scanned_too(tmp_path):
    """The client's answer to a server request (elicitation, sampling) goes up like arguments: a
    response is not refused (nothing would read the refusal), its credential is redacted."""
    answer_up = {"jsonrpc": "2.0", "id": "srv-1", "result": {"action": "accept", "content": {"token": GHP}}}
    ctx, flow, answer = flow_for(snapshot({"arguments": "block"}, tmp_path), answer_up)
    assert answer is None
    sent = json.loads(flow.request.content)
    assert sent["result"]["content"]["token"] == "[redacted:github_token]" and sent["id"] == "srv-1"
    assert ctx.audit_fields["findings"][0]["where"] == ["result.content.token"]


def test_a_blocked_call_in_a_batch_gets_its_own_error(tmp_path):
    batch = [call(body=f"key {AWS}"), {**call(body="fine"), "id": 4}]
    _, _, answer = flow_for(snapshot({}, tmp_path), batch)
    errors = {e["id"]: e["error"]["message"] for e in json.loads(answer.content)}
    assert "aws_access_key in params.arguments.body" in errors[3] and errors[4].startswith("Not forwarded")
