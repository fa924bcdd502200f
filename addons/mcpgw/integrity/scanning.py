"""Description scanning: rules (rules.yaml, plus a policy's own file) over every text of a tool
definition, at list time.

Findings about one definition depend only on that definition, so they are cached by its digest
(a catalog listed again costs a dict lookup per tool); the two rules that compare a tool with the
rest of its list (cross_tool, lookalike) run per list, on names only. Rules are compiled once per
rules file set (per policy version that names them)."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..governance.ledger import BoundedMap
from .digest import tool_digest

RULES_FILE = Path(__file__).with_name("rules.yaml")
SEVERITIES = ("low", "medium", "high", "critical")
_SCHEMA_TEXTS = ("description", "title", "default", "examples", "enum", "const")
MAX_EXCERPT = 80


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: str
    kind: str  # regex | chars | max_length | cross_tool | lookalike
    pattern: re.Pattern[str] | None = None
    limit: int = 0


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: str
    where: str  # e.g. "description", "inputSchema.properties.query.description"
    excerpt: str

    def record(self) -> dict[str, str]:
        return {"rule": self.rule, "severity": self.severity, "where": self.where, "excerpt": self.excerpt}


def _rule(entry: Any, source: str) -> Rule:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        raise ValueError(f"{source}: every rule needs an id")
    rid, severity = entry["id"], entry.get("severity", "medium")
    if severity not in SEVERITIES:
        raise ValueError(f"{source}: rule {rid}: severity must be one of {', '.join(SEVERITIES)}")
    kinds = [k for k in ("regex", "chars", "max_length", "builtin") if k in entry]
    if len(kinds) != 1:
        raise ValueError(f"{source}: rule {rid}: exactly one of regex, chars, max_length, builtin")
    kind, value = kinds[0], entry[kinds[0]]
    try:
        if kind in ("regex", "chars"):
            return Rule(rid, severity, kind, re.compile(str(value)))
    except re.error as e:
        raise ValueError(f"{source}: rule {rid}: bad regular expression: {e}") from None
    if kind == "max_length":
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{source}: rule {rid}: max_length must be a positive integer")
        return Rule(rid, severity, kind, limit=value)
    if value not in ("cross_tool", "lookalike"):
        raise ValueError(f"{source}: rule {rid}: builtin must be cross_tool or lookalike")
    return Rule(rid, severity, value)


def load_rules(extra: Path | None = None) -> tuple[Rule, ...]:
    """The default rules, with those of `extra` added (same id: replaced)."""
    rules: dict[str, Rule] = {}
    for path in (RULES_FILE, extra):
        if path is None:
            continue
        data = yaml.safe_load(path.read_text("utf-8")) or {}
        entries = data.get("rules") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a top-level `rules:` list")
        for entry in entries:
            r = _rule(entry, str(path))
            rules[r.id] = r
    return tuple(rules.values())


def texts(tool: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, text) for every string the model or the user may read in a definition."""
    for key in ("name", "title", "description"):
        if isinstance(tool.get(key), str):
            yield key, tool[key]
    for key in ("inputSchema", "outputSchema"):
        yield from _schema_texts(tool.get(key), key, 0)
    annotations = tool.get("annotations")
    if isinstance(annotations, dict) and isinstance(annotations.get("title"), str):
        yield "annotations.title", annotations["title"]


def _schema_texts(node: Any, where: str, depth: int) -> Iterator[tuple[str, str]]:
    if depth > 32:
        return
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _schema_texts(item, f"{where}[{i}]", depth + 1)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _SCHEMA_TEXTS:
                yield from _strings(value, f"{where}.{key}", depth + 1)
            elif isinstance(value, (dict, list)):
                # property names are what the model fills in: an instruction can hide there too
                if key == "properties" and isinstance(value, dict):
                    for name in value:
                        yield f"{where}.properties", name
                yield from _schema_texts(value, f"{where}.{key}", depth + 1)


def _strings(value: Any, where: str, depth: int) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, (list, dict)) and depth < 32:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            yield from _strings(v, f"{where}[{k}]" if isinstance(value, list) else f"{where}.{k}", depth + 1)


def _excerpt(text: str, start: int, end: int) -> str:
    s = max(0, start - 20)
    snippet = text[s:min(len(text), max(end, start + 1) + 20)]
    shown = "".join(ch if ch.isprintable() and ord(ch) < 0xE0000 else f"\\u{{{ord(ch):04x}}}" for ch in snippet)
    return shown[:MAX_EXCERPT]


class Scanner:
    def __init__(self, rules: tuple[Rule, ...]):
        self.rules = rules
        self.own = tuple(r for r in rules if r.kind in ("regex", "chars", "max_length"))
        self.cross = next((r for r in rules if r.kind == "cross_tool"), None)
        self.lookalike = next((r for r in rules if r.kind == "lookalike"), None)
        self._cache: BoundedMap[str, tuple[Finding, ...]] = BoundedMap(50_000)
        self._words: BoundedMap[str, tuple[frozenset[str], tuple[tuple[str, frozenset[str]], ...]]] = BoundedMap(50_000)

    def scan_tool(self, tool: dict[str, Any], digest: str | None = None) -> tuple[Finding, ...]:
        """Findings about one definition on its own, cached by its pin digest (digest.py: the
        members scanned are the members pinned)."""
        key = digest or tool_digest(tool)
        found = self._cache.get(key)
        if found is None:
            found = tuple(self._scan(tool))
            self._cache.put(key, found)
        return found

    def _scan(self, tool: dict[str, Any]) -> Iterator[Finding]:
        items = list(texts(tool))
        for rule in self.own:
            for where, text in items:
                if rule.kind == "max_length":
                    if len(text) > rule.limit:
                        yield Finding(rule.id, rule.severity, where, f"{len(text)} characters")
                    continue
                m = rule.pattern.search(text)
                if m is None:
                    continue
                if rule.kind == "chars":
                    points = sorted({f"U+{ord(c):04X}" for c in rule.pattern.findall(text)})
                    yield Finding(rule.id, rule.severity, where, ", ".join(points[:8]))
                else:
                    yield Finding(rule.id, rule.severity, where, _excerpt(text, m.start(), m.end()))
                break  # one finding per rule and tool is enough to decide

    def scan_list(self, tools: list[dict[str, Any]], digests: dict[int, str] | None = None) -> dict[str, tuple[Finding, ...]]:
        """Findings per tool name, for the named entries of one list answer. Linear in the size
        of the list: names are compared through a dict of skeletons and a set, never pairwise."""
        named = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
        digests = digests if digests is not None else {id(t): tool_digest(t) for t in named}
        out = {t["name"]: self.scan_tool(t, digests[id(t)]) for t in named}
        if self.cross is None and self.lookalike is None:
            return out
        names = [t["name"] for t in named]
        by_skeleton: dict[str, list[str]] = {}
        if self.lookalike is not None:
            for n in dict.fromkeys(names):
                by_skeleton.setdefault(skeleton(n), []).append(n)
        distinctive = {n for n in names if _distinctive(n)} if self.cross is not None else set()
        for t in named:
            extra = tuple(self._relations(t, digests[id(t)], by_skeleton, distinctive))
            if extra:
                out[t["name"]] = out[t["name"]] + extra
        return out

    def _relations(self, tool: dict[str, Any], digest: str, by_skeleton: dict[str, list[str]], distinctive: set[str]) -> Iterator[Finding]:
        name = tool["name"]
        if self.lookalike is not None:
            r = self.lookalike
            if not name.isascii() or not name.isprintable():
                yield Finding(r.id, r.severity, "name", _excerpt(name, 0, len(name)) + " (not plain ASCII)")
            else:
                twins = [n for n in by_skeleton.get(skeleton(name), ()) if n != name and n.isascii()
                         and _lookalike_pair(name, n)]  # a non-ASCII twin flags itself
                if twins:
                    yield Finding(r.id, r.severity, "name", f"{name} looks like {twins[0]}")
        if self.cross is not None and distinctive:
            every, per_text = self.words(tool, digest)
            named = (every & distinctive) - {name}  # one C-level set intersection per tool
            if named:
                where, words = next((w, ws) for w, ws in per_text if ws & named)
                yield Finding(self.cross.id, self.cross.severity, where, f"names the tool {sorted(words & named)[0]}")

    def words(self, tool: dict[str, Any], digest: str) -> tuple[frozenset[str], tuple[tuple[str, frozenset[str]], ...]]:
        """All the words of the texts but the name, and each text's (cached by definition, like
        the findings)."""
        found = self._words.get(digest)
        if found is None:
            per_text = tuple((where, frozenset(_WORD.findall(text))) for where, text in texts(tool) if where != "name")
            found = (frozenset().union(*(ws for _, ws in per_text)), per_text)
            self._words.put(digest, found)
        return found


_WORD = re.compile(r"[\w-]+(?:\.[\w-]+)*")  # dotted names, without a full stop after them


def _distinctive(name: str) -> bool:
    """Names that would not occur in prose by chance (search_code, not 'search')."""
    return len(name) >= 4 and any(c in name for c in "_-.") or len(name) >= 12


# The most common Latin look-alikes from other scripts and digits (Unicode TR39 confusables,
# abridged): enough to tell `search_cоde` (Cyrillic о) from `search_code`.
_CONFUSABLE = str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ԁ": "d",
    "ѕ": "s", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ᴠ": "v", "ɡ": "g", "ο": "o", "α": "a", "ν": "v",
    "ρ": "p", "τ": "t", "ι": "i", "κ": "k", "υ": "u", "0": "o", "1": "l", "|": "l", "-": "_", ".": "_",
})


@functools.lru_cache(maxsize=65536)
def skeleton(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return folded.translate(_CONFUSABLE).replace("rn", "m").replace("i", "l")


def _lookalike_pair(a: str, b: str) -> bool:
    """Two ASCII names with one skeleton: look-alikes unless they differ only in case (a
    server may list `Search` and `search`, which is odd but not a disguise)."""
    return a.casefold() != b.casefold()


_scanners: dict[tuple[str, int], Scanner] = {}
# (route, tool) -> (digest of the definition last listed, the rules that blocked it): its calls are refused
blocked: BoundedMap[tuple[str, str], tuple[str, tuple[str, ...]]] = BoundedMap(100_000)


def scanner_for(source: str, rules_file: str | None) -> Scanner:
    """The scanner of a rules file set; rebuilt when the extra rules file changes."""
    path = (Path(source).parent / rules_file).resolve() if rules_file else None
    key = (str(path or ""), path.stat().st_mtime_ns if path is not None else 0)
    found = _scanners.get(key)
    if found is None:
        found = _scanners[key] = Scanner(load_rules(path))
    return found
