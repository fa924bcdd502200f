"""Secret references in policy values, resolved at load: `{env://NAME}`, `{file:///path}`
(relative paths are relative to the policy file) and Kong's `{vault://env/NAME}`. A value is
either one reference (`SecretValue`) or text with references embedded in it, such as
`Bearer {env://TOKEN}` (`SecretTextValue`).

`{env://NAME}` looks in the policy's `gateway.env_file` (dotenv syntax) before the process
environment: the file can be rewritten to rotate a secret, the environment of a running process
cannot.

A resolved secret is a `Secret`, whose repr and str never show the value. Adding a backend is
one class with a `scheme` and a `read(location)` method, registered in `BACKENDS`."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets as _random
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import PlainSerializer, ValidationInfo, WrapValidator
from pydantic_core import core_schema

REFERENCE = re.compile(r"^\{(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<location>[^{}]*)\}$")
EMBEDDED_REFERENCE = re.compile(r"\{[a-z][a-z0-9+.-]*://[^{}]*\}")
CREDENTIAL_NAME = re.compile(r"auth|key|token|secret|passw|credential|cookie|signature", re.I)
"""Header and query parameter names whose values are treated as credentials."""
_FINGERPRINT_KEY = _random.token_bytes(32)  # per process: digests never reveal a secret


class SecretError(ValueError):
    pass


class Secret:
    """A secret value. Only `reveal()` gives it out; everything else is redacted."""

    __slots__ = ("_value", "reference")

    def __init__(self, value: str, reference: str | None = None):
        self._value = value
        self.reference = reference

    def reveal(self) -> str:
        return self._value

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        # Validation happens in SecretValue's wrap validator; the schema only accepts instances.
        return core_schema.is_instance_schema(cls)

    def __repr__(self) -> str:
        return f"Secret({self.reference or 'inline'})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("secret", hashlib.sha256(self._value.encode()).digest()))


class SecretText(Secret):
    """Text with secret references embedded, e.g. `Bearer {env://TOKEN}`. `reference` is the text
    as written (safe to show); `parts` are the secrets it embeds, each also secret on its own."""

    __slots__ = ("parts",)

    def __init__(self, value: str, reference: str | None = None, parts: tuple[Secret, ...] = ()):
        super().__init__(value, reference)
        self.parts = parts


class Backend:
    scheme: ClassVar[str]

    def __init__(self, resolver: "SecretResolver"):
        self.resolver = resolver

    def read(self, location: str) -> str:
        raise NotImplementedError


class EnvBackend(Backend):
    scheme = "env"

    def read(self, location: str) -> str:
        if not location:
            raise SecretError("env reference needs a variable name, e.g. {env://GITHUB_TOKEN}")
        value = self.resolver.env.get(location, os.environ.get(location))
        if value is None:
            also = f" (nor in env file {self.resolver.env_file})" if self.resolver.env_file else ""
            raise SecretError(f"environment variable {location} is not set{also}")
        if value == "":
            raise SecretError(f"environment variable {location} is empty")
        return value


class FileBackend(Backend):
    scheme = "file"

    def read(self, location: str) -> str:
        path = Path(location)
        if not path.is_absolute():
            path = self.resolver.base_dir / path
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            raise SecretError(f"secret file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SecretError(f"cannot read secret file {path}: {e}") from None
        finally:
            self.resolver.files.append(path)
        if not value:
            raise SecretError(f"secret file {path} is empty")
        return value


class KongVaultBackend(Backend):
    """Kong's `{vault://env/NAME}`: the env vault upper-cases the name and maps '-' to '_'."""

    scheme = "vault"

    def read(self, location: str) -> str:
        vault, _, name = location.partition("/")
        if vault != "env" or not name:
            raise SecretError(f"only Kong's env vault is supported ({{vault://env/NAME}}), got vault {vault!r}")
        return EnvBackend(self.resolver).read(name.split("/")[0].upper().replace("-", "_"))


BACKENDS: dict[str, type[Backend]] = {b.scheme: b for b in (EnvBackend, FileBackend, KongVaultBackend)}

_ENV_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*?)\s*$")
_ENV_DOUBLE_QUOTED = re.compile(r'"(?P<text>(?:[^"\\]|\\.)*)"\s*(?:#.*)?')
_ENV_SINGLE_QUOTED = re.compile(r"'(?P<text>[^']*)'\s*(?:#.*)?")
_ENV_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def parse_env_file(text: str, source: str) -> dict[str, str]:
    """dotenv syntax: `NAME=value` lines, optionally prefixed with `export`; blank lines and `#`
    comments are skipped. A value is unquoted (a ` #` starts a comment), 'single-quoted'
    (literal) or "double-quoted" (with \\n, \\t, \\" and \\\\ escapes). Errors name the
    line, never its content: the content is a secret."""
    env: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ENV_ASSIGNMENT.match(line)
        if m is None:
            raise SecretError(f"{source}, line {number}: expected NAME=value")
        name, value = m["name"], m["value"]
        if name in lines:
            raise SecretError(f"{source}, line {number}: {name} is already set on line {lines[name]}")
        if value.startswith('"'):
            quoted = _ENV_DOUBLE_QUOTED.fullmatch(value)
            if quoted is None:
                raise SecretError(f"{source}, line {number}: unterminated double quote")
            value = re.sub(r"\\(.)", lambda e: _ENV_ESCAPES.get(e[1], e[0]), quoted["text"])
        elif value.startswith("'"):
            quoted = _ENV_SINGLE_QUOTED.fullmatch(value)
            if quoted is None:
                raise SecretError(f"{source}, line {number}: unterminated single quote")
            value = quoted["text"]
        else:
            value = re.split(r"\s#", value, maxsplit=1)[0].rstrip()
        env[name], lines[name] = value, number
    return env


class SecretResolver:
    """Resolves references for one policy load and remembers what it read."""

    def __init__(self, base_dir: Path | str = "."):
        self.base_dir = Path(base_dir)
        self.files: list[Path] = []
        self.env: dict[str, str] = {}  # from gateway.env_file, consulted before os.environ
        self.env_file: Path | None = None
        self._values: list[str] = []

    def load_env_file(self, location: str) -> None:
        """Read the policy's `gateway.env_file`; it is watched like the policy file."""
        path = Path(location).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        self.files.append(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SecretError(f"env file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SecretError(f"cannot read env file {path}: {e}") from None
        self.env, self.env_file = parse_env_file(text, str(path)), path

    def resolve(self, text: str) -> Secret:
        m = REFERENCE.match(text.strip())
        if not m:
            return Secret(text)
        backend = BACKENDS.get(m["scheme"])
        if backend is None:
            raise SecretError(f"unknown secret reference scheme in {text} (supported: {', '.join(sorted(BACKENDS))})")
        try:
            value = backend(self).read(m["location"])
        except SecretError as e:
            raise SecretError(f"cannot resolve {text}: {e}") from None
        self._values.append(value)
        return Secret(value, reference=text)

    def resolve_text(self, text: str) -> SecretText:
        """Resolve every reference embedded in `text`; text without references stays as written."""
        parts: list[Secret] = []

        def substitute(m: re.Match[str]) -> str:
            parts.append(self.resolve(m[0]))
            return parts[-1].reveal()

        value = EMBEDDED_REFERENCE.sub(substitute, text)
        return SecretText(value, reference=text if parts else None, parts=tuple(parts))

    def fingerprint(self) -> bytes:
        mac = hmac.new(_FINGERPRINT_KEY, digestmod=hashlib.sha256)
        for v in self._values:
            mac.update(len(v).to_bytes(4, "big") + v.encode())
        return mac.digest()


def _validate_secret(value: Any, handler: Any, info: ValidationInfo) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a string or a secret reference such as {env://NAME}")
    resolver = (info.context or {}).get("secrets") or SecretResolver()
    return resolver.resolve(value)


SecretValue = Annotated[
    Secret,
    WrapValidator(_validate_secret),
    PlainSerializer(lambda s: s.reference or "<redacted>", return_type=str),
]
"""A policy field holding a secret: plain text or a reference, resolved while the policy loads."""


def _validate_secret_text(value: Any, handler: Any, info: ValidationInfo) -> SecretText:
    if isinstance(value, SecretText):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a string, optionally with secret references such as {env://NAME}")
    resolver = (info.context or {}).get("secrets") or SecretResolver()
    return resolver.resolve_text(value)


SecretTextValue = Annotated[
    SecretText,
    WrapValidator(_validate_secret_text),
    PlainSerializer(lambda s: s.reference or "<redacted>", return_type=str),
]
"""A policy field holding text with embedded secret references, e.g. `Bearer {env://TOKEN}`."""
