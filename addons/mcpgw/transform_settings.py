"""A route's request_transform settings (applied in transform.py): header and query string operations
for every request, never on the headers the gateway decided on and never with credentials."""

from __future__ import annotations

from pydantic import model_validator

from .credentials_settings import Operations
from .policy.secrets import CREDENTIAL_NAME


# What the gateway compared with the body or relies on to forward the request as judged.
PROTECTED_HEADERS = frozenset({"mcp-method", "mcp-name", "mcp-session-id", "mcp-protocol-version", "last-event-id",
                               "content-type", "content-length", "content-encoding", "transfer-encoding", "host"})


class RequestTransform(Operations):
    """Header and query string operations for every request of the route (no credentials)."""

    @model_validator(mode="after")
    def _no_decided_headers_no_credentials(self) -> "RequestTransform":
        for op in Operations.model_fields:
            section = getattr(self, op)
            for name in _names(section.headers):
                if name.lower() in PROTECTED_HEADERS:
                    raise ValueError(f"{op}.headers: {name} cannot be changed: the upstream must get the request the "
                                     "gateway decided on")
            if op in ("replace", "add", "append"):
                for where in ("headers", "querystring"):
                    for name, value in getattr(section, where):
                        if value.reference or getattr(value, "parts", ()) or CREDENTIAL_NAME.search(name):
                            raise ValueError(f"{op}.{where}: {name} looks like a credential; a stored credential is "
                                             "sent with credentials: {mode: inject} only")
        return self


def _names(entries: list) -> list[str]:
    """Names of remove (plain names), rename (old and new) and set (name, value) entries."""
    return [n for e in entries for n in ((e,) if isinstance(e, str) else (e[0], e[1]) if isinstance(e[1], str)
                                        else (e[0],))]
