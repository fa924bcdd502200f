"""Kong's own schema format for request-validator's body_schema (`version: kong`): a list of fields,
each `{name: {type, required, <validators>}}`, as Kong's plugin docs describe it. The body must be
a record of those fields: an unknown field is an error, as in Kong's schema library (so
`body_schema: '[]'` admits only `{}` or an empty body).

Implemented: types string, number, integer, boolean, map (keys, values), array (elements), record
(fields); required; between, len_eq, len_min, len_max, one_of, starts_with, uuid, timestamp.
Refused at load: the Lua-pattern validators (match, not_match, match_all, match_none, match_any)
and any other attribute, which Kong would apply and this gateway could not judge alike."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

Check = Callable[[Any], Any]  # a value -> None, or the error (a message, or a mapping for records)
TYPES = ("string", "number", "integer", "boolean", "map", "array", "record")
LUA_PATTERNS = ("match", "not_match", "match_all", "match_none", "match_any")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_SIZED = ("string", "array", "map")
_ALLOWED = {"type", "required", "between", "len_eq", "len_min", "len_max", "one_of", "starts_with", "uuid",
            "timestamp", "keys", "values", "elements", "fields"}
_IS = {
    "string": (lambda v: isinstance(v, str), "expected a string"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "expected a number"),
    "integer": (lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
                "expected an integer"),
    "boolean": (lambda v: isinstance(v, bool), "expected a boolean"),
    "map": (lambda v: isinstance(v, dict), "expected a map"),
    "array": (lambda v: isinstance(v, list), "expected an array"),
    "record": (lambda v: isinstance(v, dict), "expected a record"),
}


def compile_fields(text: str) -> Check:
    """The body check of a body_schema; ValueError says what is not implemented or malformed."""
    try:
        fields = json.loads(text)
    except ValueError as e:
        raise ValueError(f"body_schema is not JSON: {e}") from None
    return _record(fields, "body_schema")


def _record(fields: Any, where: str) -> Check:
    if not isinstance(fields, list):
        raise ValueError(f"{where}: expected a list of fields")
    checks: dict[str, Check] = {}
    required: list[str] = []
    for i, entry in enumerate(fields):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(f"{where}[{i}]: expected one {{name: {{type: ...}}}} per field")
        (name, spec), = entry.items()
        checks[name] = _field(spec, f"{where}.{name}")
        if isinstance(spec, dict) and spec.get("required") is True:
            required.append(name)

    def check(value: Any) -> Any:
        errors: dict[str, Any] = {}
        for key, item in value.items():
            found = checks.get(key)
            error = "unknown field" if found is None else None if item is None and key not in required else found(item)
            if error is not None:
                errors[key] = error
        for name in required:
            if value.get(name) is None:
                errors[name] = "required field missing"
        return errors or None
    return check


def _field(spec: Any, where: str) -> Check:
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        raise ValueError(f"{where}: a field needs a type, one of {', '.join(TYPES)}")
    kind = spec["type"]
    for key in spec:
        if key in LUA_PATTERNS:
            raise ValueError(f"{where}.{key}: Lua-pattern validators are not implemented (Lua patterns are not "
                             "regular expressions; refused rather than judged otherwise than Kong)")
        if key not in _ALLOWED:
            raise ValueError(f"{where}.{key}: not implemented (implemented: {', '.join(sorted(_ALLOWED))})")
    if not isinstance(spec.get("required", False), bool):
        raise ValueError(f"{where}.required: expected true or false")
    is_type, type_error = _IS[kind]
    inner = _inner(kind, spec, where)
    checks = _validators(kind, spec, where)

    def check(value: Any) -> Any:
        if not is_type(value):
            return type_error
        for one in checks:
            error = one(value)
            if error is not None:
                return error
        return inner(value) if inner is not None else None
    return check


def _inner(kind: str, spec: dict, where: str) -> Check | None:
    if kind == "record":
        if "fields" not in spec:
            raise ValueError(f"{where}: a record needs fields")
        return _record(spec["fields"], f"{where}.fields")
    if kind == "array":
        if "elements" not in spec:
            raise ValueError(f"{where}: an array needs elements")
        element = _field(spec["elements"], f"{where}.elements")
        return lambda value: _each(((str(i + 1), v) for i, v in enumerate(value)), element)  # Lua's 1-based index
    if kind == "map":
        if "keys" not in spec or "values" not in spec:
            raise ValueError(f"{where}: a map needs keys and values")
        keys, values = _field(spec["keys"], f"{where}.keys"), _field(spec["values"], f"{where}.values")
        return lambda value: _each(((k, v) for k, v in value.items()), lambda v: None, keys, values)
    for key in ("fields", "elements", "keys", "values"):
        if key in spec:
            raise ValueError(f"{where}.{key}: only for records, arrays and maps")
    return None


def _each(items, element: Check, keys: Check | None = None, values: Check | None = None) -> Any:
    errors = {}
    for key, value in items:
        error = (keys(key) or values(value)) if keys is not None and values is not None else element(value)
        if error is not None:
            errors[key] = error
    return errors or None


def _number(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: expected a whole number")
    return value


def _validators(kind: str, spec: dict, where: str) -> list[Check]:
    found: list[Check] = []
    if "between" in spec:
        pair = spec["between"]
        if kind not in ("integer", "number") or not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"{where}.between: two numbers, on an integer or number field")
        low, high = (_number(p, f"{where}.between") for p in pair)
        found.append(lambda v: None if low <= v <= high else f"value should be between {low} and {high}")
    for key, test, text in (("len_eq", int.__eq__, "length must be {}"), ("len_min", int.__ge__, "length must be at least {}"),
                            ("len_max", int.__le__, "length must be at most {}")):
        if key in spec:
            if kind not in _SIZED:
                raise ValueError(f"{where}.{key}: only for strings, arrays and maps")
            n = _number(spec[key], f"{where}.{key}")
            found.append(lambda v, n=n, test=test, text=text: None if test(len(v), n) else text.format(n))
    if "one_of" in spec:
        options = spec["one_of"]
        if kind not in ("string", "number", "integer") or not isinstance(options, list):
            raise ValueError(f"{where}.one_of: a list, on a string, number or integer field")
        shown = ", ".join(str(o) for o in options)
        found.append(lambda v: None if v in options else f"expected one of: {shown}")
    if "starts_with" in spec:
        prefix = spec["starts_with"]
        if kind != "string" or not isinstance(prefix, str):
            raise ValueError(f"{where}.starts_with: a string, on a string field")
        found.append(lambda v: None if v.startswith(prefix) else f"should start with: {prefix}")
    for key, kinds, test, text in (("uuid", ("string",), lambda v: bool(_UUID.match(v)), "expected a valid UUID"),
                                   ("timestamp", ("integer", "number"), lambda v: v > 0, "expected a valid timestamp")):
        if key in spec:
            if spec[key] is not True or kind not in kinds:
                raise ValueError(f"{where}.{key}: true, on a {' or '.join(kinds)} field")
            found.append(lambda v, test=test, text=text: None if test(v) else text)
    return found
