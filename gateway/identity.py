"""Who is calling, for rate limits: the verified token's user id, else the client address.

Verification is the shared `runtime.tokens` code (JWKS from the auth service, cached), so
the gateway never holds a second JWT implementation. The upstream services still verify every
token themselves; here the result only chooses a rate-limit bucket.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from gateway.settings import GatewaySettings
from runtime import tokens


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> object: ...


def build_token_verifier(auth_channel: grpc.aio.Channel, settings: GatewaySettings) -> TokenVerifier:
    keys = tokens.JwksKeySource(
        auth_channel,
        ttl_s=settings.jwks_cache_ttl_s,
        refetch_min_interval_s=settings.jwks_refetch_min_interval_s,
    )
    return tokens.AccessTokenVerifier(
        keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience, algorithm=settings.jwt_algorithm
    )


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def caller_key(verifier: TokenVerifier | None, authorization: str | None, client: str) -> str:
    token = bearer_token(authorization)
    if verifier is not None and token is not None:
        try:
            principal = await verifier.verify(token)
        except Exception:
            principal = None
        user_id = getattr(principal, "user_id", None)
        if user_id:
            return f"user:{user_id}"
    return f"addr:{client}"
