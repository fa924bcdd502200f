"""decK's environment substitution (`${{ env "DECK_NAME" }}`), on the parsed values of a decK
file, and the converter's form of a substituted secret (`{env://NAME}`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .deck_registry import Loc, Problems


_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.S)
_ENV_CALL = re.compile(r'\s*env\s+"([^"]*)"\s*', re.S)


# -- decK's ${{ env "DECK_NAME" }} -----------------------------------------------------------------


class Substituted(str):
    """A value after decK's environment substitution; `template` is the text as written."""

    template: str


def substitute_env(tree: Any, env: Mapping[str, str], problems: Problems, path: Loc = ()) -> Any:
    """decK's substitution, on parsed values: only `env "DECK_..."` calls, and every variable
    named must be set (decK refuses the file otherwise)."""
    if isinstance(tree, dict):
        return {key: substitute_env(value, env, problems, (*path, key)) for key, value in tree.items()}
    if isinstance(tree, list):
        return [substitute_env(value, env, problems, (*path, i)) for i, value in enumerate(tree)]
    if not isinstance(tree, str) or "${{" not in tree:
        return tree

    def replace(m: re.Match[str]) -> str:
        call = _ENV_CALL.fullmatch(m[1])
        if call is None:
            problems.add(path, f"unsupported decK template {m[0]!r}: only ${{{{ env \"DECK_NAME\" }}}} is supported")
        elif not call[1].startswith("DECK_"):
            problems.add(path, f"environment variable {call[1]!r}: decK only reads variables whose names start "
                               "with DECK_")
        elif call[1] not in env:
            problems.add(path, f"environment variable {call[1]} is not set (${{{{ env \"{call[1]}\" }}}})")
        else:
            return env[call[1]]
        return m[0]

    result = Substituted(_TEMPLATE.sub(replace, tree))
    result.template = tree
    return result


def as_reference(value: Any) -> Any:
    """The converter's form of a secret: `${{ env "X" }}` written as the native `{env://X}`."""
    if isinstance(value, Substituted):
        return _TEMPLATE.sub(lambda m: "{env://" + _ENV_CALL.fullmatch(m[1])[1] + "}", value.template)
    return value


def plain(tree: Any) -> Any:
    """The tree with plain str, dict and list only (for YAML and for pydantic)."""
    if isinstance(tree, dict):
        return {plain(k): plain(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [plain(v) for v in tree]
    return str(tree) if isinstance(tree, str) else tree
