"""request_validator settings compiled into checks, once per policy version (phase.py runs them).

Media types: `type/subtype` then `; name=value` parameters (RFC 9110), names and type/subtype
case-insensitive, and the charset value too; anything else is no media type (refused: fail closed).
Parameters: the query (names case-sensitive, as in Kong) and headers (names case-insensitive),
deserialized by OpenAPI's form (query) and simple (header) styles to the schema's type, then
judged by JSON Schema draft 4 (Kong does the same whatever `version` says)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import jsonschema
from jsonschema import validators

from .kong_schema import compile_fields

if TYPE_CHECKING:
    from .settings import Parameter, RequestValidatorSettings

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA = re.compile(rf"\s*({_TOKEN})/({_TOKEN})\s*")
_PARAM = re.compile(rf";\s*({_TOKEN})=({_TOKEN}|\"(?:[^\"\\\r\n]|\\.)*\")\s*")
_INTEGER = re.compile(r"-?\d+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
DRAFTS = {"draft4": jsonschema.Draft4Validator, "draft6": jsonschema.Draft6Validator,
          "draft7": jsonschema.Draft7Validator, "draft201909": jsonschema.Draft201909Validator,
          "draft202012": jsonschema.Draft202012Validator}
MediaType = tuple[str, str, dict[str, str]]
PARAM_TYPES = ("string", "integer", "number", "boolean", "array")  # a parameter schema's top-level types


def parse_media_type(text: str, allowed: bool = False) -> MediaType | None:
    """(type, subtype, parameters), lower-cased where RFC 9110 says case does not matter; None
    when the text is not one media type (a list, a repeated parameter, stray characters)."""
    m = _MEDIA.match(text)
    if m is None:
        return None
    params: dict[str, str] = {}
    at = m.end()
    while at < len(text):
        p = _PARAM.match(text, at)
        if p is None:
            return None
        name, value = p.group(1).lower(), p.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if name in params:
            return None  # which one would the upstream read?
        params[name] = value.lower() if name == "charset" else value
        at = p.end()
    kind, sub = m.group(1).lower(), m.group(2).lower()
    if not allowed and "*" in (kind, sub):
        return None
    return kind, sub, params


def media_allowed(found: MediaType, allowed: list[MediaType], with_parameters: bool) -> bool:
    kind, sub, params = found
    return any((a[0] in ("*", kind)) and (a[1] in ("*", sub)) and (not with_parameters or a[2] == params)
               for a in allowed)


def is_json(found: MediaType) -> bool:
    """Kong validates the body of application/json and of +json subtypes only."""
    return found[0] == "application" and (found[1] == "json" or found[1].endswith("+json"))


def _message(error: jsonschema.ValidationError) -> str:
    """What failed, without the value the client sent (the 400 never echoes request data)."""
    where = "/".join(str(p) for p in error.absolute_path)
    if error.validator == "type":
        text = f"wrong type: expected {error.validator_value}"
    elif error.validator == "required":
        text = f"missing a required property ({', '.join(map(str, error.validator_value))})"
    else:
        text = f"failed {error.validator}: {json.dumps(error.validator_value)}"
    return f"property {where} {text}" if where else text


def _json_validator(schema_text: str, draft: str, array_length_compat: bool, where: str) -> Callable[[Any], str | None]:
    try:
        schema = json.loads(schema_text)
    except ValueError as e:
        raise ValueError(f"{where} is not JSON: {e}") from None
    cls = DRAFTS[draft]
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"{where} is not a valid {draft} schema: {e.message}") from None
    if array_length_compat:  # Kong's array_length_compat: legacy schemas bound arrays with min/maxLength
        cls = validators.extend(cls, {"minLength": _length(cls, "minLength", int.__ge__),
                                      "maxLength": _length(cls, "maxLength", int.__le__)})
    validator = cls(schema)

    def check(value: Any) -> str | None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        return None if error is None else _message(error)
    return check


def _length(cls: Any, keyword: str, test: Callable[[int, int], bool]) -> Callable:
    original = cls.VALIDATORS[keyword]

    def check(validator, bound, instance, schema):
        if isinstance(instance, list):
            if not test(len(instance), bound):
                yield jsonschema.ValidationError(f"array length fails {keyword} {bound}")
        else:
            yield from original(validator, bound, instance, schema)
    return check


@dataclass(frozen=True)
class ParameterCheck:
    location: str  # query or header
    name: str
    required: bool
    kind: str | None  # the schema's top-level type; None without a schema
    item_kind: str
    explode: bool
    check: Callable[[Any], str | None] | None

    def judge(self, values: list[str]) -> str | None:
        """The error of this parameter's values (all of its occurrences), or None."""
        if not values:
            return "required parameter missing" if self.required else None
        if self.check is None:
            return None
        if self.kind == "array":
            items = values if (self.location == "query" and self.explode) else [v for x in values for v in x.split(",")]
            return self.check([_coerce(self.item_kind, v) for v in items])
        for value in values:  # a primitive sent twice: each occurrence is judged (Kong does the same)
            error = self.check(_coerce(self.kind, value))
            if error is not None:
                return error
        return None


def _coerce(kind: str | None, value: str) -> Any:
    """The text as the schema's type when it reads as one; otherwise the text, which then fails."""
    if kind == "integer" and _INTEGER.fullmatch(value):
        return int(value)
    if kind == "number" and _NUMBER.fullmatch(value):
        return float(value) if any(c in value for c in ".eE") else int(value)
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    return value


def parameter_validator(p: "Parameter") -> ParameterCheck:
    where = f"parameter {p.name!r} schema"
    check, kind, item_kind = None, None, "string"
    if p.schema_ is not None:
        check = _json_validator(p.schema_, "draft4", False, where)
        schema = json.loads(p.schema_)
        kind = schema.get("type") if isinstance(schema, dict) else None
        if kind not in PARAM_TYPES:
            raise ValueError(f"{where}: needs a top-level type, one of {', '.join(PARAM_TYPES)} (object parameters "
                             "are not implemented)")
        if kind == "array":
            items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
            item_kind = items.get("type", "string")
            if item_kind not in PARAM_TYPES[:4]:
                raise ValueError(f"{where}: array items must be string, integer, number or boolean")
    explode = p.explode if p.explode is not None else p.location == "query"  # the OpenAPI defaults of form/simple
    return ParameterCheck(p.location, p.name, p.required, kind, item_kind, explode, check)  # headers: looked up case-insensitively


def body_validator(s: "RequestValidatorSettings") -> Callable[[Any], Any]:
    """The body check: an error (a message, or Kong's field -> message mapping) or None."""
    if s.version == "kong":
        fields = compile_fields(s.body_schema or "[]")
        return lambda body: fields(body) if isinstance(body, dict) else "expected a record"
    return _json_validator(s.body_schema or "{}", s.version, s.array_length_compat, "body_schema")


@dataclass(frozen=True)
class Plan:
    settings: "RequestValidatorSettings"
    parameters: tuple[ParameterCheck, ...]
    allowed: list[MediaType]
    body: Callable[[Any], Any] | None  # None: no body_schema, so neither content type nor body is judged


def compile_plan(s: "RequestValidatorSettings") -> Plan:
    allowed = [m for m in (parse_media_type(t, allowed=True) for t in s.allowed_content_types) if m is not None]
    return Plan(s, tuple(parameter_validator(p) for p in s.parameter_schema), allowed,
                body_validator(s) if s.body_schema is not None else None)
