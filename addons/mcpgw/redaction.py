"""Keep secrets out of what the gateway writes: log records, audit records, command output, and
the flows mitmproxy keeps (mitmweb, saved flows, `flow_detail` output).

Three sources of what to mask:
- the policy: every secret value it holds (resolved references, the introspection client secret,
  injected credentials), for the active version and the one before it, since flows that began
  before a reload still carry the old values;
- the traffic: credentials clients present (Authorization, Proxy-Authorization, Cookie, and any
  header or query parameter whose name says key, token, secret...), noted when a request
  arrives; the most recent MAX_SEEN distinct values are kept;
- shapes: bearer and basic credentials, JWTs, credential parameters (`access_token=...`) and
  JSON fields (`"client_secret": "..."`), masked wherever they appear, known or not.

Exact values shorter than MIN_SECRET_LENGTH characters are not masked: masking them would
garble every log line, and a secret that short protects nothing anyway."""

from __future__ import annotations

import functools
import logging
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from mitmproxy import http
from pydantic import BaseModel

from .logsafe import EscapingFilter
from .policy.derived import PerPolicy
from .policy.secrets import CREDENTIAL_NAME, Secret, SecretText

if TYPE_CHECKING:
    from .context import FlowContext
    from .policy.models import Policy
    from .policy.store import PolicyStore, Snapshot

MASK = "[redacted]"
MIN_SECRET_LENGTH = 6
MAX_SEEN = 512


_SCHEME_AND_TOKEN = re.compile(r"^[A-Za-z][\w-]*\s+(\S+)$")
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Bearer <token>" and "Basic <credentials>", but not a challenge's auth-params (Bearer realm="...")
    (re.compile(r"(?i)\b(bearer|basic)(\s+)(?![A-Za-z_][\w-]*\s*=\s*[^\s=,])[A-Za-z0-9\-._~+/]{8,}=*"), r"\1\2" + MASK),
    (re.compile(r"\beyJ[\w-]{4,}\.eyJ[\w-]{4,}\.[\w-]*"), MASK),  # a JWT: base64url JSON header and payload
    (re.compile(r"(?i)\b((?:api[_-]?key|access[_-]?token|refresh[_-]?token|id[_-]?token|client[_-]?secret|password)=)"
                r"[^&\s\"';,]+"), r"\1" + MASK),
    (re.compile(r'(?i)("(?:api[_-]?key|access_token|refresh_token|id_token|client_secret|password|secret)"\s*:\s*")'
                r'(?:[^"\\]|\\.)+"'), r"\1" + MASK + '"'),
)

_SHAPE_HINT = re.compile(r'(?i)bearer|basic|eyJ|=|"')  # cheap test before the _SHAPES substitutions

_CREDENTIAL_HEADERS: dict[bytes, bool] = {}  # raw header name -> CREDENTIAL_NAME matches
# Header fields found to need no masking, by a name that does not say credential. Replaced by an
# empty set whenever what is masked changes (a newly seen credential, a policy version), so a value
# that has become a secret is masked again; a pass that began before the change fills the old set.
_clean_fields: set[tuple[bytes, bytes]] = set()
MAX_CLEAN_FIELDS = 1024

_lock = threading.Lock()
_seen: OrderedDict[str, None] = OrderedDict()  # client credentials, least recently seen first
_known: tuple[str, ...] = ()  # policy secrets and seen credentials, longest first
_known_policy: tuple[str, ...] = ()  # policy secrets only, longest first
_policy_versions: OrderedDict[int, frozenset[str]] = OrderedDict()  # snapshot version -> its secrets
# Governed flows whose request may still carry credentials unmasked (sent, or about to be): masked
# as they end, and all at once at shutdown, when mitmproxy's Save writes the flows still in flight.
_unmasked: "weakref.WeakSet[http.HTTPFlow]" = weakref.WeakSet()


def _forms(value: str) -> list[str]:
    """A credential and, for `<scheme> <token>` values, the token on its own."""
    m = _SCHEME_AND_TOKEN.match(value.strip())
    return [value, m[1]] if m else [value]


def _collect_policy_secrets(policy: "Policy") -> frozenset[str]:
    found: set[str] = set()
    pending: list[object] = [policy]
    while pending:
        obj = pending.pop()
        if isinstance(obj, SecretText):  # only the referenced parts: the text around them is the policy's
            found.update(form for part in obj.parts for form in _forms(part.reveal()))
        elif isinstance(obj, Secret):
            found.update(_forms(obj.reveal()))
        elif isinstance(obj, BaseModel):
            pending.extend(getattr(obj, name) for name in type(obj).model_fields)
        elif isinstance(obj, dict):
            pending.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            pending.extend(obj)
    return frozenset(v for v in found if len(v) >= MIN_SECRET_LENGTH)


policy_secrets = PerPolicy(_collect_policy_secrets)
"""Every secret value a policy holds, computed once per policy version."""


def _rebuild() -> None:
    """Recompute the masked values (callers hold _lock). Readers take the tuple without locking."""
    global _known, _known_policy, _clean_fields
    policy = set().union(*_policy_versions.values())
    _known_policy = tuple(sorted(policy, key=len, reverse=True))
    _known = tuple(sorted(policy.union(_seen), key=len, reverse=True))
    _clean_fields = set()  # after the values above: a pass that sees this set also sees them


def _mask(text: str, values: Iterable[str]) -> str:
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _SHAPES:
        text = pattern.sub(replacement, text)
    return text


def redact(text: str) -> str:
    """`text` with every known secret and every credential-shaped string masked."""
    return _mask(text, _known)


def for_snapshot(snapshot: "Snapshot") -> Callable[[str], str]:
    """A redactor for records about flows that ran on `snapshot` (the audit log's): its secrets,
    even if that version is no longer tracked, and everything `redact` masks."""
    own = policy_secrets(snapshot.policy)
    merged: list[tuple[str, ...] | None] = [None, ()]  # [the _known it was built from, own + _known longest first]

    def mask(text: str) -> str:
        known = _known
        if merged[0] is not known:
            merged[:] = [known, tuple(sorted(own.union(known), key=len, reverse=True))]
        return _mask(text, merged[1])

    return mask


def remember(values: Iterable[str]) -> None:
    """Note credentials seen on the traffic, so that later output masks them."""
    fresh = [v for value in values for v in _forms(value) if len(v) >= MIN_SECRET_LENGTH]
    if not fresh:
        return
    with _lock:
        added = False
        for value in fresh:
            added |= value not in _seen
            _seen[value] = None
            _seen.move_to_end(value)
        while len(_seen) > MAX_SEEN:
            _seen.popitem(last=False)
        if added:
            _rebuild()


def track_policy(snapshot: "Snapshot", keep: int = 2) -> None:
    """Mask the secrets of `snapshot` from now on, and those of the version before it."""
    with _lock:
        _policy_versions[snapshot.version] = policy_secrets(snapshot.policy)
        while len(_policy_versions) > keep:
            _policy_versions.popitem(last=False)
        _rebuild()


# -- pipeline phases -------------------------------------------------------------------------


def credential_header(raw_name: bytes) -> bool:
    """Whether a header name says credential; cached per name (there are few distinct names)."""
    verdict = _CREDENTIAL_HEADERS.get(raw_name)
    if verdict is None:
        verdict = CREDENTIAL_NAME.search(raw_name.decode("latin-1")) is not None
        if len(_CREDENTIAL_HEADERS) < 4096:
            _CREDENTIAL_HEADERS[raw_name] = verdict
    return verdict


@functools.lru_cache(maxsize=256)
def _key_names(names: tuple[str, ...]) -> frozenset[bytes]:
    """A route's key-auth names as raw header names compare: lower-case bytes."""
    return frozenset(n.lower().encode("utf-8", "surrogateescape") for n in names)


def note_client_credentials(ctx: "FlowContext", flow: http.HTTPFlow) -> None:
    """Request headers phase: remember what the client presented before any phase handles it."""
    request = flow.request
    key_auth = ctx.match.route.route.key_auth if ctx.match is not None else None
    key_names = _key_names(tuple(key_auth.key_names)) if key_auth is not None else frozenset()
    found = []
    for raw_name, raw_value in request.headers.fields:
        if credential_header(raw_name) or (key_names and raw_name.lower() in key_names):
            value = raw_value.decode("utf-8", "surrogateescape")
            found.append(value)
            if raw_name.lower() == b"cookie":
                found += [pair.partition("=")[2] for pair in value.split(";")]
    if "?" in request.path:
        found += [v for name, v in request.query.items(multi=True)
                  if name.lower().encode("utf-8", "surrogateescape") in key_names or CREDENTIAL_NAME.search(name)]
    remember(found)
    _unmasked.add(flow)
    return None


def mask_sent_request(ctx: "FlowContext", flow: http.HTTPFlow) -> None:
    """Response headers phase: the request has gone upstream, so mask the credentials it carried
    in the flow mitmproxy keeps. mitmweb then shows, and `-w` saves, the masked request."""
    mask_ended(flow)
    return None


def mask_ended(flow: http.HTTPFlow) -> None:
    """Mask a governed flow that will send nothing more upstream (answered, failed, killed)."""
    mask_request(flow.request)
    _unmasked.discard(flow)


def mask_in_flight() -> None:
    """At shutdown: mask every governed flow still waiting for its upstream."""
    for flow in list(_unmasked):
        mask_request(flow.request)
    _unmasked.clear()


def _masked_value(name: str | bytes, value: str, seen: "OrderedDict[str, None]", policy_values: tuple[str, ...]) -> str:
    credential = credential_header(name) if isinstance(name, bytes) else CREDENTIAL_NAME.search(name)
    if credential or value in seen:
        scheme = _SCHEME_AND_TOKEN.match(value.strip())
        return f"{value.split()[0]} {MASK}" if scheme else MASK
    if any(v in value for v in policy_values) or _SHAPE_HINT.search(value):
        return _mask(value, policy_values)
    return value


def mask_request(request: http.Request) -> None:
    """Mask, in place, every header and query value that is or holds a credential: by name
    (Authorization, apikey, ...), as a credential seen before, or holding a policy secret."""
    # Seen credentials are whole values, so a set lookup finds them; policy secrets may be
    # embedded (Bearer ...), so they are searched for. Membership tests need no lock.
    clean = _clean_fields  # first: see _rebuild
    seen, policy_values = _seen, _known_policy
    # One pass over the raw fields: per-name lookups would rescan every header for each name.
    fields, changed = [], False
    for field in request.headers.fields:
        if field in clean:  # Accept, Content-Type, User-Agent...: the same few values on every request
            fields.append(field)
            continue
        raw_name, raw_value = field
        value = raw_value.decode("utf-8", "surrogateescape")
        new = _masked_value(raw_name, value, seen, policy_values)
        if new != value:
            changed = True
            fields.append((raw_name, new.encode("utf-8", "surrogateescape")))
        else:
            fields.append(field)
            if not credential_header(raw_name) and len(clean) < MAX_CLEAN_FIELDS:
                clean.add(field)  # never a credential's value: only what a name says is not one
    if changed:
        request.headers.fields = tuple(fields)
    if "?" in request.path:
        query = request.query
        for name in set(query.keys()):
            values = query.get_all(name)
            replaced = [_masked_value(name, v, seen, policy_values) for v in values]
            if replaced != values:
                query.set_all(name, replaced)


# -- logging ---------------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message (formatted with its args), traceback and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: logging reports it itself
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _gateway_loggers() -> list[logging.Logger]:
    # A logger's filters apply only to records logged on it, not to those of its children.
    names = [n for n in logging.Logger.manager.loggerDict if n.startswith("mcpgw.")]
    return [logging.getLogger("mcpgw"), *(logging.getLogger(n) for n in names)]


def install(store: "PolicyStore") -> Callable[[], None]:
    """Follow the store's policy versions and filter every "mcpgw" logger: control characters in
    client-chosen values escaped first (logsafe), then secrets masked. Returns the undo."""
    filters = (EscapingFilter(), RedactingFilter())

    def on_policy(snapshot: "Snapshot | None", error: object) -> None:
        if snapshot is not None:
            track_policy(snapshot)
        for logger in _gateway_loggers():  # loggers created since the last policy load, too
            for log_filter in filters:
                logger.addFilter(log_filter)

    store.listeners.append(on_policy)
    on_policy(store.current, None)

    def uninstall() -> None:
        if on_policy in store.listeners:
            store.listeners.remove(on_policy)
        for logger in _gateway_loggers():
            for log_filter in filters:
                logger.removeFilter(log_filter)

    return uninstall
