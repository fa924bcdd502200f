"""Secret scanning of tool traffic: credentials in what clients send (tools/call arguments) and
in what servers send back (results, `content`, `structuredContent`, errors, notifications).

Detectors are compiled regular expressions for well-known credential formats, each with the
literal prefixes it must contain, so a string without any of them costs a few substring tests
(C speed) instead of a regex pass: the common case of a large result with no credential stays
cheap. SSE streams are scanned event by event by the message layer, which reassembles an event
split across chunks, so a token split between two network reads is still one string here.

Why not a detector library: detect-secrets (Yelp, last release 2024-05) is the well-kept one on
the package index; it scans files line by line under process-global settings, reports lines
and values rather than spans to replace, and adds entropy plugins whose false positives would
garble results. Its formats for the credentials named here are the ones below (with GitHub's,
AWS's and Slack's documented prefixes); a redaction needs the spans, and the hot path one
substring prefilter, so the patterns are kept here, as data, with user rules beside them.

The gateway's own secrets (the policy's: injected credentials, keys it resolves) are replaced
wherever an upstream echoes them back, whatever the action and in shadow mode too."""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass
from typing import Any

from .. import context, redaction
from ..governance import annotate
from ..policy.derived import PerPolicy
from ..protocol import bytescreen
from . import approved, record
from .settings import DETECTORS, SecretSettings

MASK = "[redacted]"
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def _escaped(secret: str) -> str:
    return _ENCODE(secret)[1:-1]


def _after_boundary(d: "Detector", pattern: str | None = None) -> str:
    """A detector's pattern for the raw screen, led by what may stand before a token in JSON text:
    the start, a byte not in `not_after`, or a one-letter escape (a token after a newline follows
    the `n` of `\\n`; `\\u` escapes and `\\/` are screened apart). Still a superset of what the
    detector reports in decoded strings, but the near misses inside words ("task-42" for `sk-`),
    which cost the screen a check each, are gone."""
    pattern = d.pattern.pattern if pattern is None else pattern
    if not d.not_after:
        return pattern
    excluded = "".join("\\" + c if c in "-]\\^[" else c for c in sorted(d.not_after))
    return rf"(?:^|[^{excluded}]|\\[bfnrt])(?:{pattern})"


MAX_PATHS = 5
RELAY_REACH = 1024  # the farthest the relayed screen reports a finding from where it begins (json_relay.TAIL is more)


def _widest(pattern: re.Pattern[str]) -> float:
    """The most characters a match of `pattern` can span (inf: no bound), as `re` computes it.
    Raw JSON text spells a token the same, but for escapes, which the screen reports apart."""
    widest = re._parser.parse(pattern.pattern, pattern.flags).getwidth()[1]  # type: ignore[attr-defined]
    return float("inf") if widest >= re._constants.MAXREPEAT else widest  # type: ignore[attr-defined]


def _masked(text: str, spans: list[tuple[int, int]], detector: str, fit: bool = False) -> str:
    """`text` with each span (in order, apart) replaced by the detector's mask (`fit`: one as
    long, in UTF-8, as what it replaces)."""
    mask, pieces, last = f"[redacted:{detector}]", [], 0
    for start, end in spans:
        pieces += [text[last:start], _fitted(text[start:end]) if fit else mask]
        last = end
    return "".join(pieces) + text[last:]


def _fitted(replaced: str) -> str:
    return "[" + "#" * (len(replaced.encode("utf-8", "surrogatepass")) - 2) + "]"


_ANY_MASK = re.compile(r"\[redacted(?::[a-z0-9_]+)?\]|\[#+\]")


def _unmasked(value: Any) -> Any:
    """A parsed message with every mask, of either form, read as one and the same mark."""
    if isinstance(value, str):
        return _ANY_MASK.sub("\x00", value)
    if isinstance(value, dict):
        return {k: _unmasked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unmasked(v) for v in value]
    return value


def _raw_boundary(d: "Detector", text: str, start: int) -> bool:
    """`Detector.matches`' not-after check, on raw JSON text: a one-letter escape before the
    match (the `n` of `\\n`) stands for a character no token continues."""
    if not d.not_after or start == 0 or text[start - 1] not in d.not_after:
        return True
    return start >= 2 and text[start - 2] == "\\" and text[start - 1] in "bfnrt"


_WORDISH = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    pattern: re.Pattern[str]
    literals: tuple[str, ...]  # one must occur for the pattern to match; () = always run
    # The match must not follow one of these characters (a token inside a longer word is not one).
    # Checked in Python rather than as a look-behind, so the pattern starts with a literal and the
    # regex engine can skip ahead to it: a look-behind first makes it try every position.
    not_after: frozenset[str] = frozenset()
    # For a pattern without a bound on its length: what every match starts with, as a pattern.
    # The relayed screen (protocol/json_relay.py) looks for it instead, so that it reports such a
    # token as soon as it begins rather than where it ends, which may be any distance later.
    lead: str = ""

    def matches(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self.pattern.finditer(text)
                if not (self.not_after and m.start() > 0 and text[m.start() - 1] in self.not_after)]


BUILTIN: dict[str, Detector] = {d.name: d for d in (
    # GitHub: ghp_ (classic PAT), gho_ (OAuth), ghu_ (user-to-server), ghs_ (server-to-server), ghr_ (refresh)
    Detector("github_token", re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{60,255})"),
             ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), _WORDISH),
    Detector("aws_access_key", re.compile(r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|NPA|NVA|PKA)[A-Z0-9]{16}(?![A-Z0-9])"),
             ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "APKA"),
             frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")),
    Detector("slack_token", re.compile(r"xox[abposre]-[A-Za-z0-9-]{10,250}"), ("xox",), _WORDISH - {"-", "_"}),
    Detector("slack_webhook", re.compile(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/+-]{20,}"),
             ("hooks.slack.com",), lead=r"https://hooks\.slack\.com/"),
    Detector("openai_key", re.compile(r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,250}"), ("sk-",), _WORDISH),
    Detector("private_key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END (?:[A-Z0-9]+ )*"
                                       r"PRIVATE KEY(?: BLOCK)?-----|.*)", re.S),  # without its END line: to the end
             ("PRIVATE KEY",), lead=r"-----BEGIN "),
    Detector("jwt", re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), ("eyJ",), _WORDISH,
             r"eyJ"),
    Detector("google_api_key", re.compile(r"AIza[0-9A-Za-z_-]{35}"), ("AIza",), _WORDISH),
    Detector("stripe_key", re.compile(r"(?:sk|rk)_live_[0-9A-Za-z]{20,247}"), ("_live_",), _WORDISH - {"-", "_"}),
)}
assert tuple(BUILTIN) == DETECTORS


@dataclass(slots=True)
class Hits:
    detectors: set[str]
    paths: list[str]

    def add(self, detector: str, path: str) -> None:
        self.detectors.add(detector)
        if len(self.paths) < MAX_PATHS and path not in self.paths:
            self.paths.append(path)


class LeakScanner:
    def __init__(self, settings: SecretSettings, known: tuple[str, ...]):
        chosen = settings.detectors if settings.detectors is not None else DETECTORS
        self.detectors = tuple(BUILTIN[n] for n in chosen) + tuple(
            Detector(r.name, re.compile(r.regex), ()) for r in settings.rules)
        literals = sorted({lit for d in self.detectors for lit in d.literals}, key=len, reverse=True)
        # one regex pass per string finds which detectors' prefixes occur at all (25 substring
        # tests would read a 1 MB result 25 times)
        self.prefilter = re.compile("|".join(map(re.escape, literals))) if literals else None
        self.by_literal = {lit: tuple(d for d in self.detectors if lit in d.literals) for lit in literals}
        self.always = tuple(d for d in self.detectors if not d.literals)
        self.known = tuple(sorted(known, key=len, reverse=True))  # the gateway's own secrets, longest first
        self._raw, self._mine = self._raw_screen() if bytescreen.AVAILABLE and not self.always else (None, 0)
        self._last: tuple[bytes, set[int]] | None = None  # the last bytes screened and what was found
        self._streaming: bytescreen.Patterns | bool | None = None  # stream mode, when first asked (False: none)

    def _screen_patterns(self, leads: bool = False) -> tuple[list[bytes], list[bool], list[bool], int]:
        """Every detector's pattern (as a superset), then what the raw text cannot be judged on:
        escapes that could spell a token differently (\\u, \\/) and the gateway's secrets as
        JSON writes them; then the tool lists' screen (approved.py), so that one pass over a
        large answer serves both. Returns (patterns, literal, dotall, how many are this scanner's).
        `leads`: each detector's lead instead of its pattern (a superset too: every match starts so)."""
        own = [_after_boundary(d, (d.lead or None) if leads else None).encode("utf-8") for d in self.detectors]
        # a NUL byte: a UTF-16 or UTF-32 body (JSON parsers read those too), which UTF-8 patterns miss
        exact = [b"\\u", b"\\/", b"\x00", *{_escaped(s).encode("utf-8", "surrogatepass") for s in self.known if s}]
        lists = list(approved.SCREEN_LITERALS)
        return (own + exact + lists, [False] * len(own) + [True] * (len(exact) + len(lists)),
                [bool(d.pattern.flags & re.S) for d in self.detectors], len(own) + len(exact))

    def _raw_screen(self) -> tuple[bytescreen.Patterns, int]:
        patterns, literal, dotall, mine = self._screen_patterns()
        return bytescreen.Patterns(patterns, literal, dotall), mine

    def stream_screen(self) -> bytescreen.Patterns | None:
        """The raw screen in stream mode, led by the detectors' leads (protocol/json_relay.py):
        nothing found in every chunk of a body means `clean` and the tool lists' screen would pass
        it whole, and what is found is reported within RELAY_REACH bytes of where it begins. None:
        no raw screen, a detector wider than that without a lead, or a secret of the gateway's
        longer than that."""
        if self._streaming is None:  # decided once: asked for every answer
            self._streaming = False
            if self._raw is not None and all(d.lead or _widest(d.pattern) <= RELAY_REACH for d in self.detectors) \
                    and all(len(_escaped(s).encode("utf-8", "surrogatepass")) <= RELAY_REACH for s in self.known):
                patterns, literal, dotall, _ = self._screen_patterns(leads=True)
                self._streaming = bytescreen.Patterns(patterns, literal, dotall, streaming=True)
        return self._streaming or None

    def redact_raw(self, data: bytes, fit: bool = False) -> bytes | None:
        """The redaction `scan` makes, made on the raw JSON text instead of its parsed strings,
        for a body of which a part is already relayed (protocol/json_relay.py, which checks that
        the result parses to what the full path gives). `fit`: each mask as long as what it
        replaces (`[###]`), so that the body keeps its length. None: not UTF-8."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        for secret in self.known:
            for form in {secret, _escaped(secret)} if secret else ():
                text = text.replace(form, _fitted(form) if fit else MASK)
        for d in self.detectors:
            spans = [(a, b) for a, b in (m.span() for m in d.pattern.finditer(text)) if _raw_boundary(d, text, a)]
            if spans:
                text = _masked(text, spans, d.name, fit)
        return text.encode("utf-8")

    def fitted(self, body: bytes, judged: bytes) -> bytes | None:
        """`body` redacted in place with masks as long as what they replace, if it then says what
        `judged` (the full path's answer) says, masks aside; else None."""
        fitted = self.redact_raw(body, fit=True)
        if fitted is None or fitted == body:
            return None
        try:
            same = _unmasked(json.loads(fitted)) == _unmasked(json.loads(judged))
        except (ValueError, RecursionError):
            return None
        return fitted if same else None

    def screened(self, data: bytes) -> set[int] | None:
        """The indexes of the patterns occurring in `data` (None: no raw screen). The last answer
        is remembered by identity: the tool transform and this scanner's ask of the same bytes."""
        if self._raw is None:
            return None
        last = self._last
        if last is not None and last[0] is data:
            return last[1]
        found = self._raw.present(data)
        self._last = (data, found)
        return found

    def list_screen(self, data: bytes) -> set[int] | None:
        """Which of approved.SCREEN_LITERALS occur in `data`, from the same pass."""
        found = self.screened(data)
        return None if found is None else {i - self._mine for i in found if i >= self._mine}

    def clean(self, data: bytes) -> bool:
        """Whether the raw JSON text of a message certainly holds nothing to find (judged before
        it is parsed, in one Hyperscan pass). A pattern's hit is confirmed with `re` on the text,
        without the not-after check (in raw text a token may follow the `n` of `\\n`)."""
        found = self.screened(data)
        if found is None:
            return False
        found = {i for i in found if i < self._mine}
        if not found:
            return True
        if max(found) >= len(self.detectors):  # an escape or one of the gateway's secrets
            return False
        text = data.decode("utf-8", "replace")
        return not any(self.detectors[i].pattern.search(text) for i in found)

    def scan(self, value: Any, redact: bool, path: str = "") -> tuple[Any, Hits, bool]:
        """(value with matches replaced if `redact` (the gateway's secrets always), hits, whether
        anything was replaced). Copy on write: unchanged parts are the same objects."""
        hits = Hits(set(), [])
        if not self._maybe(value):
            return value, hits, False
        new = self._walk(value, redact, path, hits, 0)
        return new, hits, new is not value

    def _maybe(self, value: Any) -> bool:
        """Whether the value may hold anything to find, judged on its JSON text in C-speed passes:
        most messages hold nothing, and walking a 1,000-tool list string by string costs more than
        encoding it once. Tokens are made of characters JSON never escapes, so a token in any
        string is a token in the text; the gateway's secrets are looked for escaped too."""
        if self.always:  # user rules: their anchors and classes are meant for the strings themselves
            return True
        if isinstance(value, str):
            text = value
        else:
            try:
                text = _ENCODE(value)
            except (TypeError, ValueError):
                return True
        if any(secret in text or _escaped(secret) in text for secret in self.known):
            return True
        if self.prefilter is None:
            return False
        for lit in set(self.prefilter.findall(text)):
            # the pattern alone, without the not-after check: in JSON text a token at the start of
            # a line follows the `n` of `\\n`, a word character (the walk checks each string exactly)
            if any(d.pattern.search(text) for d in self.by_literal[lit]):
                return True
        return False

    def _walk(self, value: Any, redact: bool, path: str, hits: Hits, depth: int) -> Any:
        if isinstance(value, str):
            return self._string(value, redact, path, hits)
        if depth > 64:
            return value
        if isinstance(value, dict):
            out = None
            for k, v in value.items():
                nv = self._walk(v, redact, f"{path}.{k}" if path else str(k), hits, depth + 1)
                if nv is not v and out is None:
                    out = dict(value)
                if out is not None:
                    out[k] = nv
            return value if out is None else out
        if isinstance(value, list):
            items = [self._walk(v, redact, f"{path}[{i}]", hits, depth + 1) for i, v in enumerate(value)]
            return value if all(a is b for a, b in zip(items, value)) else items
        return value

    def _string(self, text: str, redact: bool, path: str, hits: Hits) -> str:
        if len(text) < 8:  # no credential is that short
            return text
        out = text
        for secret in self.known:
            if secret in out:
                out = out.replace(secret, MASK)
                hits.add("gateway_secret", path)
        candidates: dict[str, Detector] = {}
        if self.prefilter is not None:
            for lit in set(self.prefilter.findall(out)):
                for d in self.by_literal[lit]:
                    candidates[d.name] = d
        for d in (*candidates.values(), *self.always):
            spans = d.matches(out)
            if not spans:
                continue
            hits.add(d.name, path)
            if redact:
                out = _masked(out, spans, d.name)
        return out if out != text else text


# -- per policy: one scanner per route, knowing that policy's secrets ---------------------------

def _scanners(policy) -> dict[str, LeakScanner]:
    known = tuple(redaction.policy_secrets(policy))  # the policy's secret values, as log redaction knows them
    return {name: LeakScanner(r.integrity.secrets, known) for name, r in policy.routes.items()
            if r.integrity is not None and r.integrity.secrets is not None and r.integrity.secrets.mode != "off"}


scanners = PerPolicy(_scanners)


def finding(direction: str, hits: Hits, action: str) -> dict[str, Any]:
    """The audit finding: detector names and where (JSON paths), never the values."""
    return {"check": "integrity.secrets", "direction": direction, "detectors": sorted(hits.detectors),
            "where": list(hits.paths), "action": action}


class LeakTransform:
    """Server -> client: every message scanned; matches redacted, the answer refused (block), or
    only recorded (audit, shadow), as the route says. The gateway's own secrets always go."""

    def __init__(self, flow, settings: SecretSettings, scanner: LeakScanner):
        self._flow = weakref.ref(flow)
        self.scanner = scanner
        self.action = settings.results if settings.mode == "enforce" else "audit"
        self.audited = "audited" if settings.mode == "enforce" or settings.results == "audit" else f"would_{settings.results}"

        # protocol/json_relay.py: a JSON answer relayed as it is screened. Not where a finding
        # refuses the answer whole: a part of it may be out by then, and the refusal must read as one.
        self.stream_screen = scanner.stream_screen() if self.action != "block" else None
        self.raw_patch = scanner.redact_raw
        self.raw_fit = scanner.fitted

    def passes(self, data: bytes) -> bool:
        """protocol/messages.py: raw bytes with nothing to find pass unparsed."""
        return self.scanner.clean(data)

    def __call__(self, message: dict[str, Any]) -> dict[str, Any]:
        new, hits, changed = self.scanner.scan(message, redact=self.action != "audit")
        if not hits.detectors:
            return message
        is_answer = "method" not in message and ("result" in message or "error" in message)
        own = hits.detectors - {"gateway_secret"}
        if self.action == "block" and is_answer and own:
            action = "blocked"
            new = {"jsonrpc": "2.0", "id": message.get("id"),
                   "error": {"code": -32603, "message": "The gateway withheld this answer: it carried a credential "
                                                        f"({', '.join(sorted(own))})"}}
        elif self.action == "audit":
            action = self.audited
        else:
            action = "redacted"
        self._note(hits, action)
        return new if changed or action == "blocked" else message

    def _note(self, hits: Hits, action: str) -> None:
        flow = self._flow()
        if flow is None:
            return
        ctx = context.get(flow)
        if ctx is not None:
            record(ctx, finding("result", hits, action))
        annotate.note(flow, f"integrity secrets in the answer: {', '.join(sorted(hits.detectors))} "
                            f"at {', '.join(hits.paths)}: {action.upper()}")
        annotate.mark(flow, denied=action == "blocked", would_deny=action != "blocked")
