"""Policy settings of shared state (`gateway.state`) and of the Redis server it, and rate limits
with strategy redis, use."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..policy.base import StrictModel
from ..policy.secrets import SecretValue


class RedisSettings(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(6379, gt=0, lt=65536)
    database: int = Field(0, ge=0)
    username: SecretValue | None = None
    password: SecretValue | None = None
    ssl: bool = False
    ssl_verify: bool = True
    timeout: float = Field(2.0, gt=0, description="Seconds for connecting and for each command")
    key_prefix: str = Field("mcpgw", description="Prefix of every key the gateway writes; keys carry a {hash tag} per "
                                                 "counter so that Redis Cluster keeps each script on one slot")


class StateSettings(StrictModel):
    """`gateway.state`: where state that several gateway processes must agree on lives."""

    backend: Literal["memory", "redis"] = Field("memory", description="memory: this process only; redis: shared "
                                                                      "(session bindings, OAuth introspection results)")
    redis: RedisSettings | None = Field(None, description="The Redis (or Valkey) server of the redis backend and of "
                                                          "rate limits with strategy redis")

    @model_validator(mode="after")
    def _needs_redis(self) -> "StateSettings":
        if self.backend == "redis" and self.redis is None:
            raise ValueError("gateway.state.backend redis needs gateway.state.redis")
        return self
