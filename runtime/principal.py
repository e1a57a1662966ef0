"""Who is calling: the verified access token's subject, roles and the raw token.

The auth interceptor puts the principal in a contextvar for the duration of one RPC;
servicers read it with `current_principal()` (or `require_admin()`), and outgoing
calls forward `token` so downstream services see the same caller.

A caller is either an end user (a user access token) or a service (a service token
from IssueServiceToken, `service` set). A service may act on behalf of a user
(`x-on-behalf-of`): then `user_id` is that user and `service` still names the caller.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

from runtime.errors import PermissionDenied, Unauthenticated


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    email: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)
    token: str = field(default="", repr=False)
    token_id: str = ""
    expires_at: float = 0.0
    # The refresh token family the access token belongs to (`fid`), for revocation.
    family_id: str = ""
    # `iat` as a float: revocations "not before" a time compare against it.
    issued_at: float = 0.0
    # The calling service's name when the token is a service token, else "".
    service: str = ""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service(self) -> bool:
        return bool(self.service)

    @property
    def on_behalf_of(self) -> str:
        """The user a service acts for (`x-on-behalf-of`), else ""."""
        return self.user_id if self.service and self.user_id != f"service:{self.service}" else ""


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _current.reset(token)


def current_principal() -> Principal:
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("a valid access token is required", reason="TOKEN_MISSING")
    return principal


def optional_principal() -> Principal | None:
    return _current.get()


def require_admin() -> Principal:
    principal = current_principal()
    if not principal.is_admin:
        raise PermissionDenied("this call needs the admin role", reason="ADMIN_REQUIRED")
    return principal


def require_service() -> Principal:
    principal = current_principal()
    if not principal.is_service:
        raise PermissionDenied("this call is reserved for services", reason="SERVICE_ONLY")
    return principal
