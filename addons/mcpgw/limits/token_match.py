"""Which token rules apply to an LLM call and whose counter it charges: Kong 3.14's
ai-rate-limiting-advanced `policies[].match` (every condition must hold) and `partition_by`
(which matched facts make separate counters).

The facts of a call are read once, when the call begins (after the route's model is known),
from what the gateway established, never from what the client merely asserts: the consumer is
the authenticated one, the IP the TCP peer, the model the one sent to the provider (the route's
model when it sets one). A header is the one fact a client chooses; a rule names it knowingly.
The counter key chosen then is the one charged when the answer ends, so a call is charged to
the counter it was checked against."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from .settings import TokenRule

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class CallFacts:
    consumer: str | None  # username, else id; None: anonymous
    subjects: tuple[str, ...]  # username, id, custom_id
    groups: tuple[str, ...]
    model: str | None
    provider: str
    ip: str
    path: str
    headers: Any  # the request's headers (case-insensitive mapping)


@dataclass(frozen=True, slots=True)
class Matcher:
    only_groups: tuple[str, ...] | None
    only_consumers: frozenset[str] | None
    models: frozenset[str] | None
    providers: frozenset[str] | None
    paths: tuple[str, ...] | None
    networks: tuple[Any, ...] | None
    headers: tuple[tuple[str, frozenset[str]], ...] | None  # (name, values; empty: any value)
    partition: tuple[str, ...]

    @classmethod
    def of(cls, rule: TokenRule) -> "Matcher":
        fs = lambda v: frozenset(v) if v is not None else None  # noqa: E731
        return cls(tuple(rule.only_groups) if rule.only_groups is not None else None, fs(rule.only_consumers),
                   fs(rule.models), fs(rule.providers),
                   tuple(p.rstrip("/") or "/" for p in rule.paths) if rule.paths is not None else None,
                   tuple(ipaddress.ip_network(n, strict=False) for n in rule.ips) if rule.ips is not None else None,
                   tuple(sorted((h.lower(), frozenset(v)) for h, v in rule.headers.items()))
                   if rule.headers is not None else None,
                   tuple(rule.partition_by))

    def applies(self, f: CallFacts) -> bool:
        if self.only_groups is not None and not set(self.only_groups).intersection(f.groups):
            return False
        if self.only_consumers is not None and not self.only_consumers.intersection(f.subjects):
            return False
        if self.models is not None and f.model not in self.models:
            return False
        if self.providers is not None and f.provider not in self.providers:
            return False
        if self.paths is not None and not any(_under(f.path, p) for p in self.paths):
            return False
        if self.networks is not None and not _in_networks(f.ip, self.networks):
            return False
        for name, values in self.headers or ():
            value = f.headers.get(name)
            if value is None or (values and value not in values):
                return False
        return True

    def counter(self, f: CallFacts) -> str:
        """The partition's part of the counter key: a digest, so that no consumer name, header
        value or address appears in a Redis key."""
        if self.partition == ("consumer",):  # the common case, and the key earlier versions wrote
            who = "c:" + f.consumer if f.consumer else ANONYMOUS
        else:
            who = "\x00".join(self._fact(kind, f) for kind in self.partition)
        return hashlib.blake2b(who.encode(), digest_size=12).hexdigest()

    def _fact(self, kind: str, f: CallFacts) -> str:
        if kind == "consumer":
            return "c:" + f.consumer if f.consumer else ANONYMOUS
        if kind == "consumer_group":  # the first group the rule names that the caller is in, else the caller's first
            named = [g for g in self.only_groups or () if g in f.groups]
            return "g:" + (named[0] if named else f.groups[0] if f.groups else "")
        if kind == "header":
            return "h:" + "\x01".join(f.headers.get(name, "") for name, _ in self.headers or ())
        return kind[0] + ":" + str({"model": f.model, "provider": f.provider, "ip": f.ip, "path": f.path}[kind] or "")


def _under(path: str, prefix: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _in_networks(ip: str, networks: tuple[Any, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        address = address.ipv4_mapped
    return any(address in n for n in networks if n.version == address.version)
