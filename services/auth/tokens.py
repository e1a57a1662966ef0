"""Minting tokens: asymmetric access JWTs and opaque, hashed, rotating refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from services.auth.keys import KeyRing

REFRESH_TOKEN_BYTES = 32


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    expires_in: int


def hash_refresh_token(token: str) -> bytes:
    # Refresh tokens are 256 random bits, so a plain SHA-256 is enough: there is
    # nothing to brute-force, and lookups stay a single index probe.
    return hashlib.sha256(token.encode()).digest()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


class AccessTokenIssuer:
    def __init__(self, keys: KeyRing, *, issuer: str, audience: str, ttl_s: int) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._ttl_s = ttl_s

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    def issue(self, *, user_id: str, email: str, roles: list[str], now: datetime | None = None) -> tuple[str, datetime]:
        now = now or datetime.now(UTC)
        expires_at = now + timedelta(seconds=self._ttl_s)
        key = self._keys.signing_key()
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "email": email,
            "roles": roles,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
        return token, expires_at.replace(microsecond=0)
