"""Signing keys and JWT building blocks for the test authorization server.

Real signatures come from PyJWT and cryptography. The two forgeries at the bottom are assembled
by hand on purpose: PyJWT refuses to produce them, and they are exactly the tokens an attacker
would send to a verifier that lets the token choose its own algorithm.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: dict) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str  # "RS256" or "ES256"
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, alg: str = "RS256") -> SigningKey:
        if alg == "RS256":
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            private_key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(f"unsupported signing algorithm {alg!r}")
        return cls(kid=secrets.token_urlsafe(8), alg=alg, private_key=private_key)

    @property
    def public_key(self):
        return self.private_key.public_key()

    def public_key_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self) -> dict:
        algorithm = RSAAlgorithm if self.alg == "RS256" else ECAlgorithm
        return {**algorithm.to_jwk(self.public_key, as_dict=True), "kid": self.kid, "use": "sig", "alg": self.alg}


def sign_jwt(payload: dict, key: Any, alg: str, header: dict) -> str:
    """A JWS signed by PyJWT; header entries set to None are left out."""
    header = {name: value for name, value in header.items() if value is not None}
    return jwt.encode(payload, key, algorithm=alg, headers=header)


def verify_jwt(token: str, key: SigningKey, *, issuer: str) -> dict | None:
    """The claims if `token` is a live token signed by `key` for `issuer`, else None. The audience
    is left to the resource server, as introspection does."""
    try:
        if jwt.get_unverified_header(token).get("kid") != key.kid:
            return None
        return jwt.decode(
            token,
            key.public_key,
            algorithms=[key.alg],
            issuer=issuer,
            options={"verify_aud": False, "require": ["exp", "iat", "sub"]},
        )
    except jwt.PyJWTError:
        return None


def unsigned_jwt(payload: dict, header: dict | None = None) -> str:
    """An `alg: none` token: header and payload, then an empty signature."""
    header = {"alg": "none", "typ": "JWT", **(header or {})}
    return f"{_b64url_json(header)}.{_b64url_json(payload)}."


def hs256_jwt(payload: dict, secret: bytes, header: dict | None = None) -> str:
    """An HS256 token keyed with arbitrary bytes, such as a public key's PEM."""
    header = {"alg": "HS256", "typ": "JWT", **(header or {})}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(payload)}"
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"
