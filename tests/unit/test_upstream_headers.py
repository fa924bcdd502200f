"""Gateway-owned header names in every spelling a server may read them in (identity/upstream_headers.py)."""

from __future__ import annotations

import pytest
from mitmproxy.test import tflow

from mcpgw.identity.upstream_headers import canonical_header_name, is_gateway_header, strip_client_identity_headers


class Ctx:
    route_name = "r"


@pytest.mark.parametrize("name", [b"X-Consumer-Groups", b"x_consumer_groups", b"X_Consumer_Username", b"X-CONSUMER_ID",
                                  b"x-consumer-custom_id", b"X_Credential_Identifier", b"X_ANONYMOUS_CONSUMER"])
def test_look_alikes_read_as_gateway_headers(name):
    assert is_gateway_header(name)


@pytest.mark.parametrize("name", [b"X-Consumerish", b"X-Consumer", b"Consumer-Groups", b"X-Forwarded-For", b"apikey"])
def test_other_names_do_not(name):
    assert not is_gateway_header(name)


def test_canonical_name_is_the_cgi_reading():
    assert canonical_header_name("X_Consumer_Groups") == canonical_header_name(b"x-consumer-groups") == "x-consumer-groups"


def test_every_spelling_is_stripped_and_nothing_else():
    f = tflow.tflow()
    f.request.headers.fields = ((b"X_Consumer_Groups", b"admin"), (b"x-consumer_username", b"admin-user"),
                                (b"X-Consumer-ID", b"1"), (b"Accept", b"application/json"), (b"X-Consumerish", b"kept"))
    strip_client_identity_headers(Ctx(), f)
    assert f.request.headers.fields == ((b"Accept", b"application/json"), (b"X-Consumerish", b"kept"))
