"""Redaction (redaction.py): what is masked in logs, audit text and the flows mitmproxy keeps."""

from __future__ import annotations

import logging

import pytest
import yaml
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from mcpgw import redaction
from mcpgw.context import FlowContext
from mcpgw.policy.store import PolicyStore

MASK = redaction.MASK
CLIENT_SECRET = "introspection-client-secret-42"
STORED = "stored-upstream-token-77"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MCPGW_TEST_STORED", STORED)
    monkeypatch.setenv("MCPGW_TEST_CLIENT_SECRET", CLIENT_SECRET)
    policy = {
        "consumers": {"dev-user": {"keys": ["dev-api-key-1"]}},
        "services": {"up": {"url": "https://upstream.example/mcp"}},
        "routes": {
            "swap": {
                "service": "up", "paths": ["/swap"],
                "oauth": {"authorization_servers": ["https://idp.example"],
                          "introspection_endpoint": "https://idp.example/introspect",
                          "client_id": "gateway", "client_secret": "{env://MCPGW_TEST_CLIENT_SECRET}"},
                "credentials": {"mode": "inject",
                                "add": {"headers": ["Authorization:Bearer {env://MCPGW_TEST_STORED}"]}},
            },
            "keyed": {"service": "up", "paths": ["/keyed"], "key_auth": {"key_names": ["x-gw"]}},
        },
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    s = PolicyStore()
    s.load(path)
    return s


@pytest.fixture
def installed(store):
    uninstall = redaction.install(store)
    yield store
    uninstall()


def test_policy_secrets_include_references_parts_and_client_secrets(store):
    found = redaction.policy_secrets(store.current.policy)
    assert {STORED, CLIENT_SECRET} <= found and f"Bearer {STORED}" not in found  # "Bearer " is no secret
    mask = redaction.for_snapshot(store.current)
    assert mask(f"token {STORED} and {CLIENT_SECRET}") == f"token {MASK} and {MASK}"


def test_credential_shapes_are_masked_known_or_not():
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkZXYtdXNlciJ9.c2lnbmF0dXJl"
    text = (f"Authorization: Bearer opaque.token-value_123 basic dXNlcjpwYXNzd29yZA== jwt {jwt} "
            '?access_token=abc123&page=2 {"client_secret": "s3cr3t-value", "name": "x"}')
    assert redaction.redact(text) == (
        f"Authorization: Bearer {MASK} basic {MASK} jwt {MASK} "
        f'?access_token={MASK}&page=2 {{"client_secret": "{MASK}", "name": "x"}}')


def test_challenges_and_short_words_are_left_alone():
    challenge = 'WWW-Authenticate: Bearer resource_metadata="https://gw/.well-known/x", error="invalid_token"'
    assert redaction.redact(challenge) == challenge
    assert redaction.redact("Bearer token missing") == "Bearer token missing"
    redaction.remember(["abc"])  # too short to mask without garbling everything
    assert redaction.redact("abc") == "abc"


def test_seen_client_credentials_are_masked(store):
    flow = tflow.tflow(req=tutils.treq(path=b"/keyed?x-gw=query-key-0001&q=1", headers=http.Headers([
        (b"Authorization", b"Bearer client-token-0002"), (b"x-gw", b"header-key-0003"),
        (b"Cookie", b"sid=cookie-value-0004; theme=dark"), (b"X-Trace", b"not-a-credential")])))
    match = store.current.routes.match_gateway("/keyed")
    redaction.note_client_credentials(FlowContext(store.current, "gateway", match), flow)
    text = "client-token-0002 query-key-0001 header-key-0003 cookie-value-0004 not-a-credential"
    assert redaction.redact(text) == f"{MASK} {MASK} {MASK} {MASK} not-a-credential"


def test_sent_request_is_masked_for_mitmweb_and_saved_flows(installed):
    flow = tflow.tflow(req=tutils.treq(path=b"/mcp?api=v1", headers=http.Headers([
        (b"Authorization", f"Bearer {STORED}".encode()), (b"X-Mixed", f"a {CLIENT_SECRET} b".encode()),
        (b"Accept", b"application/json")])))
    redaction.remember(["Bearer user-token-0005"])
    flow.request.query["token_hint"] = "user-token-0005"
    redaction.mask_sent_request(None, flow)
    headers = flow.request.headers
    assert headers["Authorization"] == f"Bearer {MASK}" and headers["X-Mixed"] == f"a {MASK} b"
    assert headers["Accept"] == "application/json"
    assert flow.request.query["token_hint"] == MASK and flow.request.query["api"] == "v1"


def test_log_filter_masks_messages_args_and_tracebacks(installed, caplog):
    logger = logging.getLogger("mcpgw.credentials")
    with caplog.at_level(logging.DEBUG, logger="mcpgw"):
        logger.info("sending %s for %s", f"Bearer {STORED}", "dev-user")
        try:
            raise RuntimeError(f"upstream said {CLIENT_SECRET}")
        except RuntimeError:
            logging.getLogger("mcpgw").exception("failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "dev-user" in text and STORED not in text and CLIENT_SECRET not in text
    assert f"sending Bearer {MASK} for dev-user" in caplog.messages


def test_log_filter_follows_new_versions_and_loggers(installed, tmp_path, caplog, monkeypatch):
    late = logging.getLogger("mcpgw.created-later")
    monkeypatch.setenv("MCPGW_TEST_STORED", "rotated-token-value-88")
    installed.reload(force=True)  # a new version: its secrets are masked, and so are the old ones
    with caplog.at_level(logging.INFO, logger="mcpgw"):
        late.info("old %s new %s", STORED, "rotated-token-value-88")
    assert caplog.messages == [f"old {MASK} new {MASK}"]


def test_uninstall_removes_the_filter(store):
    def filters() -> int:
        return sum(isinstance(f, redaction.RedactingFilter) for f in logging.getLogger("mcpgw.policy").filters)

    before = filters()
    uninstall = redaction.install(store)
    assert filters() == before + 1 and len(store.listeners) == 1
    uninstall()
    assert filters() == before and not store.listeners


def test_a_header_value_that_becomes_a_credential_is_masked_from_then_on(installed):
    def sent(value: str) -> str:
        flow = tflow.tflow(req=tutils.treq(headers=http.Headers([(b"X-Trace", value.encode())])))
        redaction.mask_sent_request(None, flow)
        return flow.request.headers["X-Trace"]

    assert sent("trace-value-0006") == "trace-value-0006"  # no credential: left as is (and remembered so)
    assert sent("trace-value-0006") == "trace-value-0006"
    redaction.remember(["trace-value-0006"])  # the same value is then presented as a credential
    assert sent("trace-value-0006") == MASK
