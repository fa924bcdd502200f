"""The `ai:` settings of an LLM route (Kong's ai-proxy `config`, in the native policy).

Imports only the policy base and secret types: policy/models.py references this module, never
the other way round."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ..policy.base import StrictModel, http_url
from ..policy.secrets import SecretTextValue

RouteType = Literal["llm/v1/chat", "llm/v1/responses"]
ENDPOINTS: dict[str, str] = {"llm/v1/chat": "/chat/completions", "llm/v1/responses": "/responses"}
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class AiAuth(StrictModel):
    """The provider credential the gateway sends (Kong's ai-proxy `auth`)."""

    header_name: str | None = Field(None, description="Header carrying the provider key, e.g. Authorization")
    header_value: SecretTextValue | None = Field(None, description="Its value, e.g. 'Bearer {vault://env/OPENAI_API_KEY}'")
    param_name: str | None = Field(None, description="Query parameter carrying the provider key instead (param_location: query)")
    param_value: SecretTextValue | None = None
    param_location: Literal["query"] = Field("query", description="Only query: a key in the body would reach payload logs")
    allow_override: bool = Field(False, description="Let a client's own header/parameter of that name through instead "
                                                    "(default: the client's is removed and the route's sent)")

    @model_validator(mode="after")
    def _pairs(self) -> "AiAuth":
        if (self.header_name is None) != (self.header_value is None):
            raise ValueError("auth: header_name and header_value go together")
        if (self.param_name is None) != (self.param_value is None):
            raise ValueError("auth: param_name and param_value go together")
        if self.header_name is not None and not _HEADER_NAME.match(self.header_name):
            raise ValueError(f"auth: {self.header_name!r} is not a header name")
        return self


class ModelOptions(StrictModel):
    """Options applied to every request (Kong's `model.options`): a configured option replaces
    the client's, an unset one leaves the client's as sent (Kong's merge_config_defaults)."""

    max_tokens: int | None = Field(None, gt=0, description="max_tokens (chat) or max_output_tokens (responses)")
    temperature: float | None = Field(None, ge=0, le=5)
    top_p: float | None = Field(None, ge=0, le=1)
    input_cost: float | None = Field(None, ge=0, description="Cost per million prompt tokens, for the audit's cost")
    output_cost: float | None = Field(None, ge=0, description="Cost per million completion tokens")


class AiModel(StrictModel):
    provider: Literal["openai"] = Field("openai", description="openai: OpenAI or any OpenAI-compatible base URL")
    name: str | None = Field(None, description="The model; a request naming another one is refused 400, as Kong does")
    options: ModelOptions = Field(default_factory=ModelOptions)


class AiOverride(StrictModel):
    """Another model name or options for some consumers or consumer groups (seed 002's
    consumer-scoped ai-proxy). Unset fields keep the route's."""

    name: str | None = None
    options: ModelOptions = Field(default_factory=ModelOptions)


class AiLogging(StrictModel):
    log_statistics: bool = Field(True, description="Usage, cost and latency in each LLM call's audit record")
    log_payloads: bool = Field(False, description="Also the request and answer (JSON only), with secrets redacted")


class AiMcpSettings(StrictModel):
    """MCP tools inside Responses requests (`tools[]` entries of type mcp): see ai/mcp_tools.py."""

    allow_unknown_servers: bool = Field(False, description="Let a server_url that is none of the policy's MCP routes "
                                                           "through ungoverned (default: refused 400)")
    connectors: list[str] = Field(default_factory=list, description="connector_id values allowed (default: none)")
    inject_credentials: bool = Field(True, description="For an MCP route whose credentials inject a stored one: put it "
                                                       "in the tool's headers in place of the client's")
    require_approval: dict[str, Literal["always", "never"]] = Field(
        default_factory=dict, description="Tool name -> approval forced whatever the client asked")
    rewrite_server_url: bool = Field(False, description="Send the provider to the MCP route's own URL on this gateway "
                                                        "(the first gateway.urls entry and the route's path) instead, so "
                                                        "its calls come back through that route and are governed call "
                                                        "by call; the route then adds its credential itself")


class AiTarget(StrictModel):
    """One provider of a balanced route (Kong's ai-proxy-advanced `targets[]`)."""

    url: str = Field(description="The provider's base URL, e.g. https://api.openai.com/v1 (the endpoint is appended)")
    auth: AiAuth | None = Field(None, description="This target's key (default: the route's)")
    model: AiModel | None = Field(None, description="This target's model name and options, over the route's")
    weight: int = Field(100, ge=1, le=65535, description="Share of requests under round-robin")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = http_url(v, "a target URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("a target URL carries no query, fragment or credentials (use auth:)")
        return v.rstrip("/")


# Kong's failover_criteria: error/timeout (connecting, sending, or waiting for the answer's
# headers), an answer status, and non_idempotent (retry even a request whose first attempt may
# have had effects: a Responses request with MCP tools the provider may already have called).
FailoverCriterion = Literal["error", "timeout", "http_403", "http_404", "http_429", "http_500", "http_502",
                            "http_503", "http_504", "non_idempotent"]


class AiBalancer(StrictModel):
    """How a request picks its target, and what happens when one fails (ai/balancer.py, ai/relay.py)."""

    algorithm: Literal["round-robin", "least-connections", "lowest-latency", "lowest-usage", "consistent-hashing",
                       "priority"] = Field(
        "round-robin", description="round-robin honours weights; lowest-latency / lowest-usage pick the target with the "
                                   "lowest decaying latency_strategy / tokens_count_strategy measure; consistent-hashing "
                                   "keeps one hash_on_header value on one target; priority: the highest weight's targets "
                                   "first, a lower weight's only when those fail")
    latency_strategy: Literal["tpot", "e2e"] = Field("tpot", description="lowest-latency: time per output token (Kong's "
                                                                         "default) or end-to-end latency")
    tokens_count_strategy: Literal["total-tokens", "prompt-tokens", "completion-tokens", "cost"] = Field(
        "total-tokens", description="lowest-usage: what a call adds to its target's usage")
    hash_on_header: str = Field("X-Kong-LLM-Request-ID", description="consistent-hashing: the request header whose value "
                                                                    "picks the target (absent: round-robin)")
    retries: int = Field(5, ge=0, le=32, description="Other targets tried when one fails (Kong's default 5)")
    failover_criteria: list[FailoverCriterion] = Field(
        default_factory=lambda: ["error", "timeout"],
        description="What sends a request to the next target; http_* statuses retry after the target answered, "
                    "before any byte reached the client (Kong's default: error, timeout)")
    connect_timeout: float = Field(5.0, gt=0, le=60, description="Seconds a target's connection check may take")
    failure_cooldown: float = Field(30.0, gt=0, le=3600, description="Seconds a failed target is skipped (passive health)")
    probe_after: float = Field(10.0, ge=0, le=3600, description="A target not seen healthy for this long is checked "
                                                                "(a TCP connection) before a request is sent to it")

    _retry_statuses: frozenset[int] = PrivateAttr(frozenset())

    @field_validator("hash_on_header")
    @classmethod
    def _header(cls, v: str) -> str:
        if not _HEADER_NAME.match(v):
            raise ValueError(f"hash_on_header: {v!r} is not a header name")
        return v

    def model_post_init(self, _context: object) -> None:
        self._retry_statuses = frozenset(int(c[5:]) for c in self.failover_criteria if c.startswith("http_"))

    @property
    def retry_statuses(self) -> frozenset[int]:
        """The answer statuses that send a request on to the next target (empty: none does), once per policy."""
        return self._retry_statuses


_FLAGS = re.compile(r"^(\(\?[aiLmsux]+\))")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    flags, body = "", pattern
    if m := _FLAGS.match(body):
        flags, body = m.group(1), body[m.end():]
    if body.startswith(".*") and not body.startswith(".*?"):
        body = body[2:]
    if body.endswith(".*") and not body.endswith("\\.*") and body.count("(") == body.count(")"):
        body = body[:-2]
    return re.compile(flags + body)


class PromptGuard(StrictModel):
    allow_patterns: list[str] = Field(default_factory=list, description="A prompt must match one of these (when given)")
    deny_patterns: list[str] = Field(default_factory=list, description="A prompt matching any of these is refused")
    allow_all_conversation_history: bool = Field(False, description="Scan every message, not only the last one")
    match_all_roles: bool = Field(False, description="Scan every role's messages, not only the user's")

    @field_validator("allow_patterns", "deny_patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                compile_pattern(p)
            except re.error as e:
                raise ValueError(f"pattern {p!r} is not a valid regular expression: {e}") from None
        return v



class AiSettings(StrictModel):
    """An LLM route: the route's service is the provider's base URL, e.g. https://api.openai.com/v1."""

    route_type: RouteType = Field(description="llm/v1/chat (Chat Completions) or llm/v1/responses (Responses)")
    auth: AiAuth | None = Field(None, description="Provider credential; without it the client's own goes through")
    model: AiModel = Field(default_factory=AiModel)
    consumers: dict[str, AiOverride] = Field(default_factory=dict, description="Overrides by consumer (username, id or custom_id)")
    consumer_groups: dict[str, AiOverride] = Field(default_factory=dict, description="Overrides by consumer group")
    logging: AiLogging = Field(default_factory=AiLogging)
    mcp: AiMcpSettings = Field(default_factory=AiMcpSettings)
    max_response_event: int = Field(1024 * 1024, gt=0, description="Largest single SSE event read from the provider")
    targets: list[AiTarget] = Field(default_factory=list, description="Balance over these providers instead of the "
                                                                      "service (gateway mode; docs/ai.md)")
    balancer: AiBalancer = Field(default_factory=AiBalancer)
    prompt_guard: PromptGuard | None = Field(None, description="Allow and deny patterns over the prompt (Kong's ai-prompt-guard)")

    @field_validator("consumers", "consumer_groups")
    @classmethod
    def _names(cls, v: dict[str, AiOverride]) -> dict[str, AiOverride]:
        for name in v:
            if not name.strip():
                raise ValueError("an override needs a consumer or group name")
        return v

    @property
    def endpoint(self) -> str:
        return ENDPOINTS[self.route_type]


def check_route(route_name: str, settings: AiSettings | None, groups: set[str] | dict) -> None:
    """Policy-level checks: override groups must be declared (a typo would silently not apply)."""
    if settings is None:
        return
    for group in settings.consumer_groups:
        if group not in groups:
            raise ValueError(f"route {route_name!r}: ai.consumer_groups names {group!r}, which is not a declared consumer group")

