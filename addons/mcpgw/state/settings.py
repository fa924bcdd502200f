"""Policy settings of shared state (`gateway.state`) and of the Redis server it, and rate limits
with strategy redis, use."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from ..policy.base import StrictModel
from ..policy.secrets import SecretValue


class RedisSettings(StrictModel):
    url: str | None = Field(None, description="redis://host:port/db, or rediss:// for TLS, instead of host, port, "
                                              "database and ssl; credentials never in it (username/password)")
    host: str = "127.0.0.1"
    port: int = Field(6379, gt=0, lt=65536)
    database: int = Field(0, ge=0)
    username: SecretValue | None = None
    password: SecretValue | None = None
    ssl: bool = False
    ssl_verify: bool = True
    ssl_ca_file: str | None = Field(None, description="PEM file of the CAs the server's certificate must chain to "
                                                      "(default: the system's)")
    server_name: str | None = Field(None, description="TLS: the name sent (SNI) and checked in the server's "
                                                      "certificate, when it differs from host (Kong's redis.server_name)")
    timeout: float = Field(2.0, gt=0, description="Seconds for connecting and for each command")
    key_prefix: str = Field("mcpgw", description="Prefix of every key the gateway writes; keys carry a {hash tag} per "
                                                 "counter so that Redis Cluster keeps each script on one slot")

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, data):
        if not isinstance(data, dict) or not data.get("url"):
            return data
        parts = urlsplit(str(data["url"]))
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(f"url: expected redis://host[:port][/db] or rediss://..., got {data['url']!r}")
        if parts.username or parts.password:
            raise ValueError("url: credentials are not accepted in the URL: give username/password (secret references)")
        if parts.query or parts.fragment:
            raise ValueError("url: no query or fragment")
        found = {"host": parts.hostname, "port": parts.port or 6379, "ssl": parts.scheme == "rediss"}
        if db := parts.path.strip("/"):
            if not db.isdigit():
                raise ValueError(f"url: the database is a number, got {db!r}")
            found["database"] = int(db)
        clash = [k for k in found if k in data and data[k] != found[k]]
        if clash:
            raise ValueError(f"url: says otherwise than {', '.join(clash)}")
        return {**data, **found}

    @model_validator(mode="after")
    def _tls(self) -> "RedisSettings":
        if (self.ssl_ca_file or self.server_name) and not self.ssl:
            raise ValueError("ssl_ca_file and server_name need ssl: true (or a rediss:// url)")
        if self.ssl_ca_file and not Path(self.ssl_ca_file).is_file():
            raise ValueError(f"ssl_ca_file: {self.ssl_ca_file!r} is not a readable file")
        return self


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
