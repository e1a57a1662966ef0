"""Local verification of access tokens.

Every service verifies the auth service's EdDSA/RS256 JWTs itself, with the public keys
from GetJwks cached in process: no network hop per request and no shared secret. The
verifier pins the algorithm (so `alg: none` and HS256-with-the-public-key forgeries
fail), requires exp/iat/sub/jti, checks iss and aud, and honours nbf.

Revoked tokens (logout, reuse detection, role change, account deletion) are refused
against an in-process `RevocationSet` fed by the auth service (runtime.revocations),
on every call, cached tokens included. A token with a `svc` claim is a service token
(IssueServiceToken); user tokens carry `fid`, their refresh token family.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Protocol

import grpc
import jwt

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from runtime.errors import Unauthenticated
from runtime.logging import get_logger
from runtime.principal import Principal
from runtime.revocations import RevocationSet

log = get_logger(__name__)

REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "iss", "aud"]
# Verified tokens are remembered (until they expire) so a client's repeated calls
# cost a dictionary lookup, not a signature check. Bounded to cap memory.
VERIFIED_CACHE_SIZE = 10_000
# Right after start-up the first calls wait this long at most for the revocation set,
# so a restarted service does not accept a revoked token in its first milliseconds;
# if auth is down they go on without it (the rest must keep working).
REVOCATION_SYNC_WAIT_S = 2.0
SERVICE_ROLE = "service"


class KeySource(Protocol):
    async def key_for(self, kid: str) -> jwt.PyJWK | None: ...


def jwk_from_message(key: auth_pb2.JsonWebKey) -> jwt.PyJWK:
    data = {
        name: value
        for name, value in (
            ("kty", key.kty),
            ("kid", key.kid),
            ("alg", key.alg),
            ("use", key.use),
            ("crv", key.crv),
            ("x", key.x),
            ("n", key.n),
            ("e", key.e),
        )
        if value
    }
    return jwt.PyJWK(data)


class AccessTokenVerifier:
    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        algorithm: str,
        revocations: RevocationSet | None = None,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._algorithm = algorithm
        self._verified: OrderedDict[str, Principal] = OrderedDict()
        self._revocations = revocations
        self._sync_deadline = time.monotonic() + REVOCATION_SYNC_WAIT_S

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at <= time.time():
                self._verified.pop(token, None)
                raise Unauthenticated("the access token has expired", reason="TOKEN_EXPIRED")
            principal = cached
        else:
            principal = await self._verify_uncached(token)
            self._verified[token] = principal
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        await self._check_revocation(principal)
        return principal

    async def _check_revocation(self, principal: Principal) -> None:
        revocations = self._revocations
        if revocations is None or principal.is_service:
            return
        if not revocations.synced:
            remaining = self._sync_deadline - time.monotonic()
            if remaining > 0:
                await revocations.wait_synced(remaining)
        if revocations.refuses(principal):
            raise Unauthenticated("the access token has been revoked", reason="TOKEN_REVOKED")

    async def _verify_uncached(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("the access token is malformed", reason="TOKEN_INVALID") from None
        if header.get("alg") != self._algorithm:
            raise Unauthenticated("the access token uses a wrong algorithm", reason="TOKEN_INVALID")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the access token has no key id", reason="TOKEN_INVALID")
        key = await self._keys.key_for(kid)
        if key is None:
            raise Unauthenticated("the access token was signed by an unknown key", reason="TOKEN_INVALID")
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the access token is invalid", reason="TOKEN_INVALID") from None
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("the access token is invalid", reason="TOKEN_INVALID")
        service = claims.get("svc", "")
        family = claims.get("fid", "")
        if not isinstance(service, str) or not isinstance(family, str):
            raise Unauthenticated("the access token is invalid", reason="TOKEN_INVALID")
        # A service token is recognised by both marks, so a user token can never pass
        # as one (auth never puts `svc` or the `service` role in a user token).
        if bool(service) != (SERVICE_ROLE in roles):
            raise Unauthenticated("the access token is invalid", reason="TOKEN_INVALID")
        return Principal(
            user_id=str(claims["sub"]),
            email=str(claims.get("email", "")),
            roles=frozenset(roles),
            token=token,
            token_id=str(claims["jti"]),
            expires_at=float(claims["exp"]),
            family_id=family,
            issued_at=float(claims["iat"]),
            service=service,
        )


class JwksKeySource:
    """Public keys from the auth service's GetJwks, cached; refetched on an unknown kid."""

    def __init__(self, channel: grpc.aio.Channel, *, ttl_s: float, refetch_min_interval_s: float) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._ttl_s = ttl_s
        self._refetch_min_interval_s = refetch_min_interval_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self._ttl_s
        if kid in self._keys and not stale:
            return self._keys[kid]
        if stale or now - self._fetched_at >= self._refetch_min_interval_s:
            await self._refresh(now)
        return self._keys.get(kid)

    async def _refresh(self, requested_at: float) -> None:
        async with self._lock:
            if self._fetched_at > requested_at:
                return  # another caller refreshed while this one waited
            try:
                response = await self._stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=2.0)
            except grpc.aio.AioRpcError as exc:
                # Keep serving with the keys we have; the next unknown kid retries.
                log.warning("jwks_fetch_failed", code=exc.code().name)
                self._fetched_at = time.monotonic()
                return
            keys = {}
            for message in response.keys:
                try:
                    keys[message.kid] = jwk_from_message(message)
                except jwt.InvalidKeyError:
                    log.warning("jwks_key_unusable", kid=message.kid)
            self._keys = keys
            self._fetched_at = time.monotonic()
