"""A route's `request_validator` (Kong's request-validator plugin, docs/kong.md). Every schema is
compiled here, at load: a schema the gateway cannot judge as Kong would is refused with the reason,
never half-applied at request time."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from ..policy.base import StrictModel

# JSON Schema versions Kong's `version` names (kong is Kong's own field format, kong_schema.py).
VERSIONS = ("kong", "draft4", "draft6", "draft7", "draft201909", "draft202012")
# Parameter styles implemented (OpenAPI 3 serialization): form for the query, simple for headers.
STYLES = {"query": ("form",), "header": ("simple",)}


class Parameter(StrictModel):
    """One entry of Kong's parameter_schema."""

    model_config = ConfigDict(StrictModel.model_config, populate_by_name=True)

    location: Literal["query", "header", "path"] = Field(alias="in", description="query or header (path: refused)")
    name: str = Field(min_length=1, description="Case-sensitive in the query, not in headers (HTTP)")
    required: bool
    schema_: str | None = Field(None, alias="schema", description="A JSON Schema (draft 4) with a top-level type")
    style: str | None = Field(None, description="form (query) or simple (header), the OpenAPI defaults")
    explode: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> "Parameter":
        if self.location == "path":
            raise ValueError(f"parameter {self.name!r}: in: path needs a named capture of a regex route path; "
                             "the gateway's route paths are plain prefixes")
        if self.style is not None and self.style not in STYLES[self.location]:
            raise ValueError(f"parameter {self.name!r}: style {self.style!r} is not implemented in {self.location} "
                             f"(implemented: {', '.join(STYLES[self.location])})")
        if self.schema_ is not None:
            from .compile import parameter_validator  # the check compiles it; the phase compiles it once more per version

            parameter_validator(self)
        return self


class RequestValidatorSettings(StrictModel):
    """Kong's request-validator config, with Kong's names and defaults."""

    version: Literal[VERSIONS] = Field("kong", description="kong (Kong's field format) or a JSON Schema draft, for body_schema")  # type: ignore[valid-type]
    body_schema: str | None = Field(None, description="JSON text: Kong fields (version kong) or a JSON Schema")
    parameter_schema: list[Parameter] = Field(default_factory=list)
    allowed_content_types: list[str] = Field(default_factory=lambda: ["application/json"])
    content_type_parameter_validation: bool = Field(True, description="Compare the media type's parameters too")
    verbose_response: bool = Field(False, description="Say in the 400 what failed")
    array_length_compat: bool = Field(True, description="JSON Schema: minLength/maxLength count array items too")

    @model_validator(mode="after")
    def _check(self) -> "RequestValidatorSettings":
        if self.body_schema is None and not self.parameter_schema:
            raise ValueError("one of body_schema or parameter_schema must be specified (as in Kong)")
        from .compile import body_validator, parse_media_type

        for text in self.allowed_content_types:
            if parse_media_type(text, allowed=True) is None:
                raise ValueError(f"allowed_content_types: {text!r} is not a media type (type/subtype; parameters)")
        if self.body_schema is not None:
            body_validator(self)
        return self
