"""A service's own identity for calls it makes as itself.

Each service holds a secret credential (SERVICE_CREDENTIAL, from a Kubernetes Secret in
a cluster) and exchanges it with the auth service (IssueServiceToken) for a short-lived
service token, signed with the same keys as user access tokens and verified through the
same JWKS path. `ServiceIdentity` obtains the token, caches it, renews it before it
expires, and builds the outgoing metadata, optionally acting on behalf of a user
(`x-on-behalf-of`, honoured only for service tokens), e.g. to deliver a user's write
after the user's own token has expired.

In development and test, a service without SERVICE_CREDENTIAL uses a well-known
development credential derived from its name, which the auth service accepts only
outside staging and production.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import structlog

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from runtime.clients import open_channel
from runtime.errors import Unavailable
from runtime.logging import get_logger
from runtime.settings import SettingsError, TokenClientSettings

log = get_logger(__name__)

ON_BEHALF_OF = "x-on-behalf-of"
DEV_SERVICE_CREDENTIAL_PREFIX = "agentmesh-development-service-credential-"  # public by design
SAFE_ENVS = ("development", "test")
# A token is renewed once this share of its lifetime has passed, so a call never
# carries a token about to expire and a short auth outage goes unnoticed.
RENEW_AFTER_SHARE = 0.5


def dev_service_credential(name: str) -> str:
    return f"{DEV_SERVICE_CREDENTIAL_PREFIX}{name}"


def is_dev_service_credential(credential: str) -> bool:
    return credential.startswith(DEV_SERVICE_CREDENTIAL_PREFIX)


def service_credential_for(settings: TokenClientSettings, name: str) -> str:
    """The credential a service presents; refuses development ones in staging/production."""
    configured = settings.service_credential.get_secret_value()
    if settings.app_env not in SAFE_ENVS and (not configured or is_dev_service_credential(configured)):
        raise SettingsError(
            f"invalid settings:\n  SERVICE_CREDENTIAL: required for APP_ENV={settings.app_env}"
            " (the development credential is public)"
        )
    return configured or dev_service_credential(name)


class ServiceIdentity:
    def __init__(self, name: str, credential: str, channel: grpc.aio.Channel, *, timeout_s: float = 2.0) -> None:
        self.name = name
        self._credential = credential
        self._channel = channel
        self._owns_channel = False
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._timeout_s = timeout_s
        self._token = ""
        self._expires_at = 0.0
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls, settings: TokenClientSettings, name: str, channel: grpc.aio.Channel | None = None
    ) -> ServiceIdentity:
        credential = service_credential_for(settings, name)
        identity = cls(name, credential, channel or open_channel(settings.auth_addr))
        identity._owns_channel = channel is None
        return identity

    async def token(self) -> str:
        if self._token and time.time() < self._renew_at:
            return self._token
        async with self._lock:
            if self._token and time.time() < self._renew_at:
                return self._token  # renewed by another caller meanwhile
            try:
                response = await self._stub.IssueServiceToken(
                    auth_pb2.IssueServiceTokenRequest(service_name=self.name, credential=self._credential),
                    timeout=self._timeout_s,
                )
            except grpc.aio.AioRpcError as exc:
                # The current token, while it lasts, is better than failing the call.
                if self._token and time.time() < self._expires_at - 5:
                    log.warning("service_token_renewal_failed", code=exc.code().name)
                    return self._token
                raise Unavailable("cannot obtain a service token from the auth service") from exc
            now = time.time()
            self._token = response.access_token
            self._expires_at = response.expires_at.ToNanoseconds() / 1e9
            self._renew_at = now + max(1.0, (self._expires_at - now) * RENEW_AFTER_SHARE)
            return self._token

    async def metadata(self, on_behalf_of: str | None = None) -> tuple[tuple[str, str], ...]:
        """Outgoing metadata for a call made as this service (optionally for a user)."""
        entries = [("authorization", f"Bearer {await self.token()}")]
        if on_behalf_of:
            entries.append((ON_BEHALF_OF, on_behalf_of))
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id:
            entries.append(("x-request-id", str(request_id)))
        return tuple(entries)

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()
