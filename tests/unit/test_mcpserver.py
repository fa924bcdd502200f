"""The gateway's own MCP server (mcpserver/server.py): version negotiation and tools/list cursors,
which a client may forge."""

from __future__ import annotations

import base64

import pytest

from mcpgw.mcpserver.server import VERSIONS, _cursor, _negotiate, _offset


@pytest.mark.parametrize("params, version", [
    ({"protocolVersion": "2025-06-18"}, "2025-06-18"), ({"protocolVersion": "2024-11-05"}, "2024-11-05"),
    ({"protocolVersion": "2099-01-01"}, VERSIONS[0]), ({"protocolVersion": 5}, VERSIONS[0]), (None, VERSIONS[0]),
    ([], VERSIONS[0]),
])
def test_version_negotiation(params, version):
    assert _negotiate(params) == version


def test_cursor_round_trip():
    assert _offset(None, 10) == 0
    assert _offset(_cursor(4), 10) == 4


@pytest.mark.parametrize("cursor", [
    base64.urlsafe_b64encode(b"tools:10").decode(),  # past the end
    base64.urlsafe_b64encode(b"tools:-1").decode(), base64.urlsafe_b64encode(b"prompts:1").decode(),
    base64.urlsafe_b64encode(b"tools:1e3").decode(), "not base64!", "", 3, ["tools:1"], {"offset": 1},
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
])
def test_forged_cursors_refused(cursor):
    assert _offset(cursor, 10) is None
