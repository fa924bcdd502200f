"""Read a policy file: strict YAML (duplicate keys are errors, yaml_source.py), pydantic validation,
and errors that name the file, the line and the field."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from .models import Policy
from .secrets import SecretResolver
from .yaml_source import PolicyError, parse_yaml, yaml_line  # PolicyError, parse_yaml: importable from here too

if TYPE_CHECKING:
    from .deck import DeckSettings


def _locate(root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    """Line of the deepest YAML node along a pydantic error location, as ' (line N)'."""
    line = yaml_line(root, loc)
    return f" (line {line})" if line else ""


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def format_validation_error(err: ValidationError, root: yaml.Node | None) -> list[str]:
    problems = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if p not in ("function-after[_check_references()]",))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see docs/policy.md)"
        elif e["type"] == "missing":
            msg = "field required"
        problems.append(f"{_format_loc(loc)}{_locate(root, loc)}: {msg}")
    return problems


def validate_policy(data: Any, root: yaml.Node | None, source: str, resolver: SecretResolver, *,
                    deck: "DeckSettings | None" = None) -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(source, ["expected a mapping at the top level (services:, routes:, ...)"])
    if "_format_version" in data:
        from .deck import translate_deck  # decK files are translated into the native model

        # Problems are located in the decK file; the native result's keys are not its lines.
        data, root = translate_deck(data, source, root, settings=deck), None
    try:
        return Policy.model_validate(data, context={"secrets": resolver})
    except ValidationError as e:
        raise PolicyError(source, format_validation_error(e, root)) from None


def load_policy_file(path: str | Path, *, deck: "DeckSettings | None" = None) -> tuple[Policy, str, list[Path]]:
    """Load and validate a policy. Returns (policy, digest, files it depends on). `deck`: the
    gateway's options for translating a decK file.

    The digest covers the file, every secret it resolved and, for a decK file, the settings it was
    translated with, so the store can tell a real change from a touch."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(source, ["policy file not found (set it with --set mcp_policy=PATH)"]) from None
    except OSError as e:
        raise PolicyError(source, [f"cannot read policy file: {e.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError(source, [f"not UTF-8 text (byte {e.start})"]) from None
    data, root = parse_yaml(text, source)
    resolver = SecretResolver(base_dir=path.parent)
    policy = validate_policy(data, root, source, resolver, deck=deck)
    translated = deck.fingerprint() if deck is not None and isinstance(data, dict) and "_format_version" in data else b""
    digest = hashlib.sha256(raw + resolver.fingerprint() + translated).hexdigest()
    return policy, digest, [path, *resolver.files]
