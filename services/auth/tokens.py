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
SERVICE_ROLE = "service"


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

    def issue(
        self, *, user_id: str, email: str, roles: list[str], family_id: str, now: datetime | None = None
    ) -> tuple[str, datetime]:
        now = now or datetime.now(UTC)
        expires_at = now + timedelta(seconds=self._ttl_s)
        claims = {
            "sub": user_id,
            "email": email,
            "roles": roles,
            # The refresh family: Logout and reuse detection revoke its access tokens too.
            "fid": family_id,
        }
        return self._sign(claims, now, expires_at), expires_at.replace(microsecond=0)

    def issue_service(self, *, service: str, ttl_s: int, now: datetime | None = None) -> tuple[str, datetime]:
        now = now or datetime.now(UTC)
        expires_at = now + timedelta(seconds=ttl_s)
        claims = {"sub": f"service:{service}", "svc": service, "roles": [SERVICE_ROLE]}
        return self._sign(claims, now, expires_at), expires_at.replace(microsecond=0)

    def _sign(self, claims: dict, now: datetime, expires_at: datetime) -> str:
        key = self._keys.signing_key()
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            **claims,
            # Milliseconds (RFC 7519 allows a fractional NumericDate): a revocation "not
            # before" a time must not also refuse the token issued right after it.
            "iat": round(now.timestamp(), 3),
            "exp": int(expires_at.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
