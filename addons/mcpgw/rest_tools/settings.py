"""Settings of a route whose MCP tools are REST operations (Kong ai-mcp-proxy's conversion modes).

    rest_tools:
      mode: conversion-listener          # conversion-listener | conversion-only | listener
      tags: [ecom-mcp]                   # listeners naming one of these serve this route's tools
      tools:
        - name: get-order
          description: Get one order
          method: GET
          path: orders/{orderId}         # relative: under the route's first path (Kong's rule)
          parameters:
            - {name: orderId, in: path, required: true, schema: {type: string}}
      server: {timeout: 10, tag: ecom-mcp}

A tool's `path` is the path as the route sees it (Kong: "must match the route's paths"); the call
goes to the route's service as a request on that path would (strip_path applies). Only
policy/base.py and policy/secrets.py are imported here: the policy model imports this module."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..policy.base import ByteSize, StrictModel
from ..policy.secrets import CREDENTIAL_NAME, Secret, SecretTextValue

Mode = Literal["conversion-listener", "conversion-only", "listener"]
SERVING_MODES = frozenset({"conversion-listener", "listener"})
TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an HTTP token (RFC 9110): header and cookie names
TOOL_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")  # Kong uses titles ("Get users") as names: any printable text
# Headers a parameter or a fixed value may not set: framing and routing belong to the gateway, and
# credentials to the route's credential mediation (a caller must not choose what the API sees).
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te",
                              "trailer", "keep-alive", "proxy-connection", "expect", "content-type",
                              "authorization", "proxy-authorization", "cookie"})
SCHEMA_KEYWORDS = frozenset({"type", "format", "enum", "items", "default", "minimum", "maximum", "pattern",
                             "minLength", "maxLength", "minItems", "maxItems"})
BODY_TYPES = ("application/json", "application/x-www-form-urlencoded")
BODY_ARGUMENT = "body"  # the inputSchema member holding the request body


class RestParameter(StrictModel):
    """One OpenAPI parameter (`in: path|query|header|cookie`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, populate_by_name=True, defer_build=True)

    name: str = Field(min_length=1, description="The parameter's name, also its argument's name in inputSchema")
    in_: Literal["path", "query", "header", "cookie"] = Field(alias="in", description="Where the value goes")
    required: bool = Field(False, description="Path parameters are always required")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "string"}, alias="schema",
                                    description="JSON Schema of the value (OpenAPI's schema object, inline)")
    deprecated: bool = False
    example: Any = None

    @model_validator(mode="before")
    @classmethod
    def _swagger_keywords(cls, data: Any) -> Any:
        """Swagger 2's parameter-level `type`, `enum`, `format`... (Kong's weather examples use
        them) describe the value: moved into `schema`, which wins where both say something."""
        if isinstance(data, dict) and (moved := SCHEMA_KEYWORDS & data.keys()):
            schema = data.get("schema") if isinstance(data.get("schema"), dict) else {}
            data = {**{k: v for k, v in data.items() if k not in moved},
                    "schema": {**{k: data[k] for k in moved}, **schema}}
        return data

    @model_validator(mode="after")
    def _check(self) -> "RestParameter":
        if self.in_ in ("header", "cookie") and not TOKEN.match(self.name):
            raise ValueError(f"{self.in_} parameter name {self.name!r} is not a valid {self.in_} name")
        if self.in_ == "header" and self.name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header parameter {self.name!r} is not allowed: the gateway or the route's credential "
                             "mediation sets that header")
        if self.in_ == "path" and not self.required:
            object.__setattr__(self, "required", True)  # OpenAPI: a path parameter is always required
        if "$ref" in str(self.schema_):
            raise ValueError("$ref is not supported in a parameter schema: inline it (as Kong requires)")
        return self


class RestBody(StrictModel):
    """OpenAPI's requestBody: one content type, its schema inline."""

    content: dict[str, dict[str, Any]] = Field(description="content type -> {schema: ...}; one entry")
    required: bool = False
    description: str | None = None

    @field_validator("content")
    @classmethod
    def _one_type(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if len(v) != 1:
            raise ValueError(f"give exactly one content type (supported: {', '.join(BODY_TYPES)})")
        ctype, media = next(iter(v.items()))
        if ctype.lower() not in BODY_TYPES:
            raise ValueError(f"content type {ctype!r} is not supported (supported: {', '.join(BODY_TYPES)})")
        if not isinstance(media, dict) or set(media) - {"schema", "example", "examples"}:
            raise ValueError("a content entry is {schema: ...}")
        if "$ref" in str(media):
            raise ValueError("$ref is not supported in a request body schema: inline it (as Kong requires)")
        return v

    @property
    def content_type(self) -> str:
        return next(iter(self.content)).lower()

    @property
    def schema_(self) -> dict[str, Any]:
        return next(iter(self.content.values())).get("schema") or {}


class ToolAnnotations(StrictModel):
    """MCP tool annotations, in Kong's snake_case names (sent as MCP's camelCase)."""

    title: str | None = None
    read_only_hint: bool | None = None
    destructive_hint: bool | None = None
    idempotent_hint: bool | None = None
    open_world_hint: bool | None = None


class RestTool(StrictModel):
    """One REST operation served as an MCP tool."""

    name: str | None = Field(None, description="Tool name; default annotations.title, else <route>-<n> (Kong's rule)")
    description: str = Field(min_length=1)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str | None = Field(None, description="The path as the route sees it; relative paths are under the route's "
                                                "first path; default: the route's first path")
    parameters: list[RestParameter] = Field(default_factory=list)
    request_body: RestBody | None = None
    headers: dict[str, list[SecretTextValue]] = Field(default_factory=dict, description="Fixed headers of every call")
    query: dict[str, list[SecretTextValue]] = Field(default_factory=dict,
                                                    description="Fixed query arguments of every call (e.g. an API key: "
                                                                "{env://NAME})")
    annotations: ToolAnnotations | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, list]) -> dict[str, list]:
        for name, values in v.items():
            if not TOKEN.match(name) or name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} cannot be set here (use credentials: for secrets sent as "
                                 "Authorization or Cookie)")
            if any(re.search(r"[\x00-\x1f\x7f]", value.reveal()) for value in values):
                raise ValueError(f"header {name!r}: a value contains a control character")
        return v

    @field_validator("headers", "query")
    @classmethod
    def _mask_inline_credentials(cls, v: dict[str, list]) -> dict[str, list]:
        """A credential written inline (an API key in `query: {key: [...]}`, as Kong's weather
        examples do) is masked in logs like a {env://...} reference would be."""
        return {name: [Secret(value.reveal()) if not value.parts and CREDENTIAL_NAME.search(name) else value
                       for value in values] for name, values in v.items()}

    @model_validator(mode="after")
    def _check(self) -> "RestTool":
        if self.name is not None and not TOOL_NAME.match(self.name):
            raise ValueError(f"tool name {self.name!r}: 1 to 128 characters, no control characters")
        seen: set[str] = set()
        for p in self.parameters:
            if p.name in seen or (self.request_body is not None and p.name == BODY_ARGUMENT):
                raise ValueError(f"argument name {p.name!r} is used twice (parameters share one inputSchema; "
                                 f"the request body is the argument {BODY_ARGUMENT!r})")
            seen.add(p.name)
        if self.path is not None:
            if "?" in self.path or "#" in self.path:
                raise ValueError("a tool path has no query or fragment: use query: or parameters in: query")
            named = set(re.findall(r"\{([^{}]*)\}", self.path))
            declared = {p.name for p in self.parameters if p.in_ == "path"}
            if named != declared:
                raise ValueError(f"path {self.path!r} names {sorted(named)} but the path parameters are "
                                 f"{sorted(declared)}")
        elif any(p.in_ == "path" for p in self.parameters):
            raise ValueError("path parameters need a path naming them")
        return self


class ServerSettings(StrictModel):
    """How the gateway serves the tools (conversion-listener and listener routes)."""

    tag: str | None = Field(None, description="listener: serve the tools of the routes that carry this tag")
    timeout: float = Field(10.0, gt=0, le=600, description="Seconds a tool's REST call may take (Kong: 10000 ms)")
    forward_client_headers: bool = Field(True, description="Send the client's headers with each REST call "
                                                           "(credentials only to the route's own service)")
    name: str | None = Field(None, description="serverInfo.name of initialize (default: the route name)")
    page_size: int = Field(100, ge=1, le=1000, description="Tools per tools/list page")
    max_response_size: ByteSize = Field(4 * 1024 * 1024, gt=0, description="Largest REST response turned into a result")


class RestToolsSettings(StrictModel):
    """A route serving REST operations as MCP tools, or lending them to listeners (docs/rest-tools.md)."""

    mode: Mode = Field(description="conversion-listener: serve own tools; conversion-only: tools for listeners "
                                   "only; listener: serve the tools of tagged routes")
    tags: list[str] = Field(default_factory=list, description="Tags of this route's tools (Kong's plugin tags)")
    tools: list[RestTool] = Field(default_factory=list)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @model_validator(mode="after")
    def _check(self) -> "RestToolsSettings":
        if self.mode == "listener":
            if self.tools:
                raise ValueError("a listener defines no tools: it serves those of the routes tagged server.tag")
            if not self.server.tag:
                raise ValueError("a listener needs server.tag: the tag of the routes whose tools it serves")
        elif not self.tools:
            raise ValueError(f"mode {self.mode} needs tools")
        return self

