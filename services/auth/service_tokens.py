"""Service tokens: a service proves itself with its credential and gets a short-lived
token signed like an access token (same keys, same JWKS, `svc` claim, `service` role)."""

from __future__ import annotations

from datetime import datetime

from runtime.errors import Unauthenticated
from runtime.logging import get_logger
from services.auth.settings import AuthSettings
from services.auth.tokens import AccessTokenIssuer

log = get_logger(__name__)

MAX_SERVICE_NAME = 64


class ServiceTokens:
    def __init__(self, settings: AuthSettings, issuer: AccessTokenIssuer) -> None:
        self._settings = settings
        self._issuer = issuer
        self._ttl_s = settings.service_token_ttl_s

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    def issue(self, service_name: str, credential: str) -> tuple[str, datetime]:
        name = service_name.strip()
        if (
            not name
            or len(name) > MAX_SERVICE_NAME
            or not credential
            or not self._settings.service_credential_matches(name, credential)
        ):
            log.warning("service_credential_refused", service=name[:MAX_SERVICE_NAME])
            raise Unauthenticated("unknown service or wrong credential", reason="SERVICE_CREDENTIAL_INVALID")
        return self._issuer.issue_service(service=name, ttl_s=self._ttl_s)
