"""Who the caller is, as session bindings and governance correlation tell callers apart.

An authenticated caller is its consumer (or, for an OAuth token mapped to no consumer, the
token's subject), whatever credential it used this time. Anyone else (no identity phase on the
route, or key-auth's anonymous consumer) is the credentials it presents: a digest of the values of
every header and query parameter whose name says credential (Authorization, X-API-Key, ...;
cookies excepted, which a browser or a load balancer changes at will). Two clients presenting no
credential at all are the same caller: a route without authentication cannot tell them apart."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from mitmproxy import http

from ..redaction import CREDENTIAL_NAME, credential_header

if TYPE_CHECKING:
    from ..context import FlowContext


def caller_key(ctx: "FlowContext", request: http.Request) -> str:
    """Computed once per flow, when first needed: before any phase removes credentials upstream
    does not need (an identity phase that removes its own has set ctx.identity by then)."""
    key = ctx.caller
    if key is None:
        identity = ctx.identity
        if identity is not None and identity.method != "anonymous":
            key = f"{identity.method}:{identity.username}"
        else:
            key = f"anonymous:{identity.username if identity else ''}:{_credential_digest(request)}"
        ctx.caller = key
    return key


def _credential_digest(request: http.Request) -> str:
    h = hashlib.sha256()
    # Filtered before sorting: most headers say nothing of credentials, and the verdict per name is cached.
    credentials = sorted((n.lower(), v) for n, v in request.headers.fields if credential_header(n))
    for raw_name, raw_value in credentials:
        if raw_name != b"cookie":
            h.update(b"h\0%s\0%s\0" % (raw_name, raw_value))
    if "?" in request.path:
        for name, value in sorted(parse_qsl(request.path.partition("?")[2], keep_blank_values=True)):
            if CREDENTIAL_NAME.search(name):
                h.update(b"q\0%s\0%s\0" % (name.encode("utf-8", "surrogatepass"), value.encode("utf-8", "surrogatepass")))
    return h.hexdigest()[:32]
